// The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven by playwright-core, against a
// running `fjord start`.
//
// Usage: node dashboard_browser.js HTTP_ADDR BOOTSTRAP FJORD_BIN SCREENSHOT_DIR [USER:PASSWORD]
//
// With USER:PASSWORD (the platform runs with dashboard.auth.basic.users) every page is opened as
// http://USER:PASSWORD@HTTP_ADDR/, the browser's own basic-auth login; the page's changes carry the CSRF token
// from its cookie.
//
// Before this runs, the test has created topic `orders` (2 partitions) and produced 5 records with kcat to its
// partition 0 (key k1..k5, JSON values, a header trace=abc). This script keeps a kafkajs consumer in group
// `billing` alive (3 of the 5 records committed, so its lag is 2) while it checks each page: the overview live
// over server-sent events; with a login, that a hidden page closes its stream and opens it again when shown
// (counted by the server's per-user cap on streams); the overview's polling fallback when the stream cannot be
// opened; then it creates topics through the form and compares with the CLI, and deletes one (its name typed as
// confirmation); changes a topic config (validated by the broker first); then closes the consumer, resets the
// group's offsets to a timestamp and deletes the group (its id typed as confirmation); with a login, logs out
// through the header's button. Every wait is bounded. The platform runs without the registry and Connect, whose
// pages must say so. Prints `ok` at the end.
const http = require('http');
const { Kafka, logLevel } = require('kafkajs');
const { check, sleep, until, fjord: cli, run } = require('./browser');

const [addr, bootstrap, fjordBin, shots, login] = process.argv.slice(2);
const base = login ? `http://${login}@${addr}/` : `http://${addr}/`;
const WAIT = 20000;
const fjord = (...args) => cli(fjordBin, bootstrap, ...args);
const kafka = (clientId) => new Kafka({ clientId, brokers: [bootstrap], logLevel: logLevel.NOTHING });

/** The topic document of `fjord topics describe NAME --output json`. */
function described(name) {
  const r = fjord('topics', 'describe', name, '--output', 'json');
  check(r.code === 0, r.err);
  const v = JSON.parse(r.out);
  return Array.isArray(v) ? v[0] : v;
}

// ---- the dashboard's live streams seen from outside the browser (as alice, with a session of its own) ----

const [host, port] = addr.split(':');

/** One request to the dashboard: {status, headers, body} (the body read whole). */
function request(method, path, headers, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method, path, headers, agent: false, timeout: 10000 }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer in 10 s`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** A new login session of the script's user: the `fjord_session=...` cookie a basic-auth request is handed. */
async function session() {
  const auth = `Basic ${Buffer.from(login).toString('base64')}`;
  const r = await request('GET', '/api/overview', { Authorization: auth });
  check(r.status === 200, `GET /api/overview as ${login}: ${r.status} ${r.body}`);
  const c = (r.headers['set-cookie'] || []).find((s) => s.startsWith('fjord_session='));
  check(c, `no session cookie: ${JSON.stringify(r.headers)}`);
  return c.split(';')[0];
}

/** Ends a session (`POST /api/logout`); its streams end at the next sampling round. */
async function logout(cookie) {
  const r = await request('POST', '/api/logout',
    { 'Content-Type': 'application/json', 'X-CSRF-Token': 't0k3n', Cookie: `${cookie}; fjord_csrf=t0k3n` }, '{}');
  check(r.status === 200, `logout: ${r.status} ${r.body}`);
}

/** Opens the overview stream with a session cookie: {status, close(), ended} (`ended` resolves when the server
 * ends the stream; the events themselves are read and dropped). */
function stream(cookie) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path: '/api/overview/stream', headers: { Cookie: cookie }, agent: false }, (res) => {
      const ended = new Promise((r) => res.on('close', r));
      res.resume();
      resolve({ status: res.statusCode, ended, close: () => req.destroy() });
    });
    const t = setTimeout(() => req.destroy(new Error('the stream did not answer in 10 s')), 10000);
    req.on('response', () => clearTimeout(t));
    req.on('error', reject);
  });
}

/** Streams of `cookie` opened until the server refuses one (429, the per-user cap); returns those it opened. */
async function fill(cookie) {
  const held = [];
  for (;;) {
    const s = await stream(cookie);
    if (s.status !== 200) {
      check(s.status === 429, `a stream past the cap: ${s.status}`);
      return held;
    }
    held.push(s);
    check(held.length <= 64, 'no cap on live streams');
  }
}

/** What a hidden (or shown again) tab does: the browser's visibility as the page reads it, and the event. */
async function setHidden(page, hidden) {
  await page.evaluate((hidden) => {
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => hidden });
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (hidden ? 'hidden' : 'visible') });
    document.dispatchEvent(new Event('visibilitychange'));
  }, hidden);
}

const isStream = (url) => new URL(url).pathname === '/api/overview/stream';

// ---- the consumer group: join, read the 5 records of partition 0, commit after the third ----

const consumer = kafka('billing-client').consumer({ groupId: 'billing', sessionTimeout: 30000 });
let consumerOpen = false;

async function startConsumer() {
  await consumer.connect();
  consumerOpen = true;
  await consumer.subscribe({ topic: 'orders', fromBeginning: true });
  let seen = 0;
  // The member stays in the group (kafkajs heartbeats in the background); records after the commit are read but
  // never committed.
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ topic, partition, message }) => {
      seen += 1;
      if (seen === 3) {
        await consumer.commitOffsets([{ topic, partition, offset: String(Number(message.offset) + 1) }]);
      }
    },
  });
  await until(() => seen >= 5, () => `the consumer to read 5 records (saw ${seen})`, 60000);
}

async function closeConsumer() {
  if (consumerOpen) {
    consumerOpen = false;
    await consumer.disconnect();
  }
}

let loadMs = 0;

run(base, shots, WAIT, async (b) => {
  const { page, goto, text, texts, attr, count, first, shot } = b;
  await startConsumer();

  // Overview: the topic count is the broker's, and the live chart is drawn.
  const t0 = Date.now();
  await goto('');
  loadMs = Date.now() - t0;
  check(Number(await text('#ov-topics')) >= 1, await text('#ov-topics'));
  check((await text('#ov-brokers')) === '1', await text('#ov-brokers'));
  check((await page.locator('#rate-chart').boundingBox()).height > 100, 'the rate chart is drawn');
  // The page handed out the CSRF token the script sends with every change.
  const csrf = (await b.context.cookies()).find((c) => c.name === 'fjord_csrf');
  check(csrf && csrf.value.length >= 32, JSON.stringify(csrf));
  await shot('overview');

  // Live: while records flow, the chart gains points over server-sent events (a sample every 5 s) without the
  // page being rendered again: the same canvas element, and a mark left on the page is still there.
  let r = fjord('topics', 'create', 'traffic');
  check(r.code === 0, r.err);
  const points = async () => Number(await attr('#rate-chart', 'data-points'));
  await page.evaluate(() => { window.__mark = document.getElementById('rate-chart'); });
  await until(async () => (await attr('#rate-chart', 'data-live')) === 'on', 'the chart to go live', WAIT);
  const before = await points();
  const traffic = kafka('traffic').producer();
  await traffic.connect();
  const deadline = Date.now() + 30000;
  while ((await points()) < Math.min(before + 2, 180)) {
    if (Date.now() >= deadline) check(false, `the chart stayed at ${await points()} points (from ${before})`);
    await traffic.send({ topic: 'traffic', messages: Array.from({ length: 50 }, () => ({ value: 'x'.repeat(100) })) });
    await sleep(500);
  }
  await traffic.disconnect();
  const same = () => page.evaluate(() => document.getElementById('rate-chart') === window.__mark);
  check(await same(), 'the page was rendered again');
  check((await attr('#rate-chart', 'data-live')) === 'on', 'the chart is still live');
  await shot('overview-live');

  if (login) {
    // A hidden tab closes its stream and opens it again when shown. The server counts the streams of a user (at
    // most 16: one more is a 429), so a second session of the same user sees the page's stream come and go:
    // beside the shown page it can open 15.
    const holder = await session();
    const probe = await session();
    const held = await fill(holder);
    check(held.length === 15, `beside the shown page ${login} could open ${held.length} streams (cap 16)`);
    let pageStreams = 0;
    page.on('request', (req) => { if (isStream(req.url())) pageStreams += 1; });
    await setHidden(page, true);
    const hiddenAt = Date.now();
    const hiddenPoints = await points();
    // Hidden: the server frees the page's place (when its next write fails), so one more stream opens.
    const closing = Date.now();
    const extra = await until(async () => {
      const s = await stream(probe);
      if (s.status === 200) return s;
      check(s.status === 429, `a stream past the cap: ${s.status}`);
      await sleep(500);
      return null;
    }, "the hidden page's stream to be closed on the server (its place freed)", 40000);
    const closedMs = Date.now() - closing;
    // Sampling rounds (every 5 s) pass while hidden (at least three); the page opens no stream meanwhile.
    await sleep(Math.max(0, 16000 - (Date.now() - hiddenAt)));
    check(pageStreams === 0, `the hidden page opened ${pageStreams} streams`);
    // The probe's session ends, and with it its stream (and its place) at the next round.
    await logout(probe);
    await Promise.race([extra.ended, sleep(20000).then(() => check(false, 'the logged-out stream went on'))]);
    // Shown again: the page opens its stream from where its chart is (`after`), without being rendered again,
    // and the points of the rounds it missed arrive; the server counts the page's stream again.
    const reopened = page.waitForResponse((res) => isStream(res.url()), { timeout: WAIT });
    const missed = Math.floor((Date.now() - hiddenAt) / 5000);
    check(missed >= 3, `hidden for ${missed} rounds`);
    await setHidden(page, false);
    const res = await reopened;
    check(res.status() === 200, `the stream opened again answered ${res.status()}`);
    check(new URL(res.url()).searchParams.has('after'), res.url());
    // The missed rounds come at once with the stream's first event (new rounds alone would take 5 s each): at
    // least all but one of them within 4 s.
    const caughtUp = Math.min(hiddenPoints + missed - 1, 180);
    await until(async () => (await points()) >= caughtUp,
      async () => `the chart to catch up from ${hiddenPoints} to ${caughtUp} points at once (has ${await points()})`, 4000);
    check(await same(), 'the page was rendered again');
    check((await attr('#rate-chart', 'data-live')) === 'on', 'the chart is live again');
    const past = await stream(holder);
    past.close();
    check(past.status === 429, `beside the page shown again a 16th stream answered ${past.status}`);
    await logout(holder);
    held.forEach((s) => s.close());
    await shot('overview-shown-again');
    console.log(`ok hidden page: its stream freed on the server ${closedMs} ms after hiding; opened again when shown`);
  }

  // Without its live stream (here every attempt fails at the network) the overview polls: after three failed
  // attempts it reloads its data every sampling interval, so the cards and the chart still move.
  {
    const p = await b.context.newPage();
    let attempts = 0;
    let polls = 0;
    await p.route(isStream, (route) => { attempts += 1; return route.abort(); });
    p.on('response', (res) => {
      const u = new URL(res.url());
      if (u.pathname === '/api/overview' && res.status() === 200) polls += 1;
    });
    await goto('', p);
    await until(async () => (await attr('#rate-chart', 'data-live', p)) === 'polling', 'the overview to fall back to polling', 30000);
    check(attempts >= 3, `gave up after ${attempts} attempts`);
    const topics = Number(await text('#ov-topics', p));
    const chart = Number(await attr('#rate-chart', 'data-points', p));
    r = fjord('topics', 'create', 'polled');
    check(r.code === 0, r.err);
    await until(async () => Number(await text('#ov-topics', p)) === topics + 1,
      async () => `the polled overview to show ${topics + 1} topics (shows ${await text('#ov-topics', p)})`, 30000);
    await until(async () => Number(await attr('#rate-chart', 'data-points', p)) > chart,
      () => `the polled chart to gain points (from ${chart})`, 30000);
    await shot('overview-polling', p);
    console.log(`ok polling fallback: ${attempts} stream attempts refused, the overview read ${polls} times`);
    await p.close();
  }

  // This platform runs without the registry and Connect: their pages say so and how to run them.
  for (const [view, box, flag] of [
    ['#/schemas', 'registry-not-running', '--registry-listener none'],
    ['#/connect', 'connect-not-running', '--connect-listener none'],
  ]) {
    await goto(view);
    check((await text(`#${box}`)).includes(flag), await text(`#${box}`));
    await shot(box);
  }

  // Topics list shows `orders` with its 2 partitions.
  await goto('#/topics');
  const row = page.locator("xpath=//table[@id='topics-table']//tr[td/a[text()='orders']]");
  check((await row.locator('td').nth(1).innerText()).trim() === '2', await row.innerText());
  await shot('topics');

  // The topic page: partitions with offsets, and the message browser showing kcat's records.
  await goto('#/topics/orders');
  const p0 = await texts("xpath=//table[@id='partitions-table']/tbody/tr[1]/td");
  check(p0[5] === '5', `end offset of partition 0: ${p0[5]}`);
  await page.selectOption('#msg-partition', '0');
  await page.click('#msg-load');
  await page.locator('#messages-table').waitFor();
  let keys = await texts('#messages-table td.msg-key');
  check(JSON.stringify(keys) === JSON.stringify(['k1', 'k2', 'k3', 'k4', 'k5']), keys);
  const firstValue = () => text('#messages-table tbody tr:first-child td.msg-value');
  check((await firstValue()) === '{"item":"book","qty":1}', await firstValue());
  check((await text('#messages-table tbody tr:first-child td.msg-headers')).includes('trace: abc'), 'the header');
  await page.selectOption('#msg-format', 'json');
  const pretty = await firstValue();
  check(pretty === '{\n  "item": "book",\n  "qty": 1\n}', JSON.stringify(pretty));
  await page.selectOption('#msg-format', 'hex');
  check((await text('#messages-table tbody tr:first-child td.msg-key')) === '6b 31', 'the key in hex');
  // "auto" (reloaded with the server's registry decoding, here without a registry): JSON pretty, text as it is.
  await page.selectOption('#msg-format', 'auto');
  await until(async () => (await firstValue()) === pretty, 'the auto format to show the JSON pretty', WAIT);
  check((await text('#messages-table tbody tr:first-child td.msg-key')) === 'k1', 'the key as text');
  await shot('topic');

  // The search scans on the server and streams what it finds, case-insensitive when asked.
  await page.fill('#search-text', '"QTY":4');
  await page.click('#search-icase');
  await page.click('#search-go');
  await until(async () => (await text('#search-status')).startsWith('done'), 'the search', WAIT);
  keys = await texts('#search-table td.msg-key');
  check(JSON.stringify(keys) === '["k4"]', keys);
  let status = await text('#search-status');
  check(status.includes('1 found in 5 records, searched the whole range'), status);
  await shot('search');

  // A record whose timestamp is beyond what a JavaScript Date holds (|ms| > 8.64e15) shows as the number.
  r = fjord('topics', 'create', 'far-future', '--config', 'message.timestamp.after.max.ms=9223372036854775807');
  check(r.code === 0, r.err);
  const far = kafka('far').producer({ allowAutoTopicCreation: false });
  await far.connect();
  await far.send({ topic: 'far-future', acks: -1, messages: [{ value: 'far', partition: 0, timestamp: '9000000000000000' }] });
  await far.disconnect();
  await goto('#/topics/far-future');
  await page.click('#msg-load');
  await until(async () => (await text('#msg-result')).includes('partition 0:'), 'the far-future record', WAIT);
  const cells = await texts('#messages-table tbody tr:first-child td');
  check(cells.length > 0, await text('#msg-result'));
  check(cells[1] === '9000000000000000', cells[1]);

  // The message browser's read_committed box: a record of an aborted transaction is shown (marked) as a
  // read_uncommitted consumer sees it, and hidden with the box ticked; the transaction markers never.
  r = fjord('topics', 'create', 'txns');
  check(r.code === 0, r.err);
  const txnProducer = kafka('browser-txn').producer({ transactionalId: 'browser-txn', idempotent: true, maxInFlightRequests: 1 });
  await txnProducer.connect();
  let txn = await txnProducer.transaction();
  await txn.send({ topic: 'txns', messages: [{ value: 'kept', partition: 0 }] });
  await txn.commit();
  txn = await txnProducer.transaction();
  // The send returns once the broker has the record: the abort comes after it is in the log.
  await txn.send({ topic: 'txns', messages: [{ value: 'thrown away', partition: 0 }] });
  await txn.abort();
  await txnProducer.disconnect();
  await goto('#/topics/txns');
  await page.click('#msg-load');
  await page.locator('#messages-table').waitFor();
  const values = () => texts('#messages-table td.msg-value');
  check(JSON.stringify(await values()) === '["kept","thrown away"]', await values());
  const marked = await texts('#messages-table tr.aborted td.msg-value');
  check(JSON.stringify(marked) === '["thrown away"]', marked);
  await page.click('#msg-committed');
  await until(async () => (await text('#msg-result')).includes('read_committed'), 'the read_committed answer', WAIT);
  check(JSON.stringify(await values()) === '["kept"]', await values());
  await shot('read-committed');

  // The search's read_committed box likewise: the aborted record is found without it and not with it.
  const search = async (term) => {
    await page.fill('#search-text', term);
    await page.click('#search-go');
    await until(async () => (await text('#search-status')).startsWith('done'), `the search for ${term}`, WAIT);
    return [await texts('#search-table td.msg-value'), await text('#search-status')];
  };
  let [hits, st] = await search('thrown');
  check(JSON.stringify(hits) === '["thrown away"]', `${hits} ${st}`);
  check(JSON.stringify(await texts('#search-table tr.aborted td.msg-value')) === JSON.stringify(hits), 'the aborted hit is marked');
  await page.click('#search-committed');
  [hits, st] = await search('thrown');
  check(hits.length === 0, `${hits} ${st}`);
  check(st.startsWith('done: 0 found'), st);
  [hits, st] = await search('kept');
  check(JSON.stringify(hits) === '["kept"]', `${hits} ${st}`);

  // The group page: the live member, its partitions, and lag equal to `fjord groups describe`.
  await goto('#/groups/billing');
  check((await text('#group-state')) === 'Stable', await text('#group-state'));
  check((await text('#members-table td.member-client')) === 'billing-client', await text('#members-table td.member-client'));
  const counts = (await texts('#members-table td.member-count')).map(Number);
  check(JSON.stringify(counts) === '[2]', counts);
  r = fjord('groups', 'describe', 'billing', '--output', 'json');
  check(r.code === 0, r.err);
  const group = JSON.parse(r.out);
  check((await text('#group-lag')) === String(group.lag) && group.lag === 2, `page ${await text('#group-lag')}, CLI ${group.lag}`);
  const cliP0 = group.partitions.find((p) => p.topic === 'orders' && p.partition === 0);
  const lagCell = page.locator("xpath=//table[@id='offsets-table']/tbody/tr[td[1]='orders' and td[2]='0']").locator('td.lag');
  check((await lagCell.innerText()).trim() === String(cliP0.lag), `lag of orders-0: page ${await lagCell.innerText()}, CLI ${cliP0.lag}`);
  // The lag over time: the server samples it every 5 s; once two samples of the constant lag 2 are in, the
  // chart has them and the estimate says the group is not catching up (it commits nothing more). The page
  // follows the samples live, without being loaded again.
  await until(async () => (await attr('#catch-up', 'data-state')) !== 'unknown', async () => await text('#catch-up'), 30000);
  check((await attr('#catch-up', 'data-state')) === 'stalled', await text('#catch-up'));
  check((await text('#catch-up')).includes('Not catching up'), await text('#catch-up'));
  check(Number(await attr('#lag-chart', 'data-points')) >= 2, await attr('#lag-chart', 'data-points'));
  check((await page.locator('#lag-chart').boundingBox()).height > 100, 'the lag chart is drawn');
  await shot('group-lag');
  // Resetting the offsets of a group with a live member is refused, dry run included.
  await page.click('#reset-dry-run');
  let res = await first('#reset-error');
  check(res.text.includes('has active members'), res.text);
  // So is deleting it, its id typed as confirmation (Kafka's NON_EMPTY_GROUP).
  await page.fill('#group-delete-name', 'billing');
  await page.click('#group-delete-submit');
  res = await first('#group-delete-error');
  check(res.text.includes('has active members'), res.text);
  await shot('group');
  await goto('#/groups');
  check((await text('#groups-table')).includes('billing'), await text('#groups-table'));

  // Create a topic through the form: a confirmation step, then the CLI sees it.
  const create = async (name, partitions) => {
    await goto('#/topics');
    await page.fill('#create-name', name);
    if (partitions !== null) await page.fill('#create-partitions', String(partitions));
    await page.click('#create-submit');
    await page.click('#create-confirm');
    return first('#form-ok, #form-error');
  };
  res = await create('from-browser', 3);
  check(res.id === 'form-ok', res.text);
  check(described('from-browser').partitions.length === 3, 'from-browser has 3 partitions');
  await shot('created');

  // Deleting it needs its exact name typed: a near miss is refused and the topic stays.
  const deleteTopic = async (typed) => {
    await goto('#/topics/from-browser');
    await page.fill('#delete-confirm-name', typed);
    await page.click('#delete-submit');
    return first('#admin-result .ok, #form-error');
  };
  res = await deleteTopic('from-browse');
  check(res.text.includes('type its exact name'), res.text);
  check(fjord('topics', 'describe', 'from-browser').code === 0, 'the topic stays');
  res = await deleteTopic('from-browser');
  check(res.text.startsWith('Deleted topic from-browser.'), res.text);
  r = fjord('topics', 'describe', 'from-browser');
  check(r.code !== 0 && r.err.includes('does not exist'), r.err);

  // A bad name and a bad partition count: the page shows the CLI's own message.
  for (const [name, parts, expect] of [
    ['bad name!', null, 'illegal, it contains a character other than ASCII alphanumerics'],
    ['zero-parts', 0, '0 is not in 1..=2147483647'],
  ]) {
    res = await create(name, parts);
    check(res.id === 'form-error', res.text);
    r = fjord('topics', 'create', name, ...(parts !== null ? ['--partitions', String(parts)] : []));
    check(r.code !== 0, `fjord topics create ${name} succeeded`);
    const cliMsg = r.err.trim().replace(/^error: /, '');
    check(res.text.includes(expect) && cliMsg.includes(expect), `page: ${JSON.stringify(res.text)} CLI: ${JSON.stringify(cliMsg)}`);
    if (parts === null) {
      // The broker's refusal, worded by the CLI: the same text, word for word.
      check(res.text === cliMsg, `page: ${JSON.stringify(res.text)} CLI: ${JSON.stringify(cliMsg)}`);
    }
  }
  await shot('bad-input');

  // A topic config: the broker validates a change first (a bad value shows its message and changes nothing),
  // then it is applied after confirmation and the configs table shows it, as the CLI does.
  const validateConfig = async (key, value) => {
    await goto('#/topics/orders');
    await page.fill('#config-key', key);
    await page.fill('#config-value', value);
    await page.click('#config-validate');
    return first('#config-check, #config-error');
  };
  res = await validateConfig('retention.ms', 'soon');
  check(res.id === 'config-error' && res.text.includes('soon'), res.text);
  res = await validateConfig('retention.ms', '86400000');
  check(res.id === 'config-check', res.text);
  check(!('retention.ms' in described('orders').configs), 'the config is unchanged before the confirmation');
  await page.click('#config-confirm');
  await page.locator('#config-ok').waitFor({ state: 'attached' });
  const configCell = page.locator("xpath=//table[@id='configs-table']//tr[td[1]='retention.ms']/td[2]");
  await until(async () => (await configCell.count()) > 0 && (await configCell.first().innerText()).trim() === '86400000',
    'the configs table to show retention.ms', WAIT);
  const configs = described('orders').configs;
  check(configs['retention.ms'] && configs['retention.ms'].value === '86400000', JSON.stringify(configs));
  await shot('topic-config');

  // The consumer leaves: the group is empty, so its offsets reset to a timestamp (a date typed in ISO 8601;
  // before every record: the first offsets) after a dry run, and then the group is deleted.
  await closeConsumer();
  await goto('#/groups/billing');
  check((await text('#group-state')) === 'Empty', await text('#group-state'));
  await page.selectOption('#reset-to', 'timestamp');
  await page.fill('#reset-timestamp', '1970-01-01T00:00:00Z');
  await page.click('#reset-dry-run');
  await page.locator('#reset-execute').waitFor();
  const rows = (css, n) => page.locator(css).evaluateAll((trs, n) =>
    trs.map((tr) => [...tr.querySelectorAll('td')].slice(0, n).map((td) => td.innerText.trim())), n);
  const plan = await rows('#reset-table tbody tr', 99);
  check(JSON.stringify(plan) === JSON.stringify([['orders', '0', '3', '0'], ['orders', '1', '–', '0']]), JSON.stringify(plan));
  await page.click('#reset-execute');
  await page.locator('#reset-ok').waitFor({ state: 'attached' });
  r = fjord('groups', 'describe', 'billing', '--output', 'json');
  check(r.code === 0, r.err);
  check(JSON.parse(r.out).lag === 5, r.out);
  // The page's own table and total lag show the new offsets without a reload.
  const committed = await rows('#offsets-table tbody tr', 3);
  check(JSON.stringify(committed) === JSON.stringify([['orders', '0', '0'], ['orders', '1', '0']]), JSON.stringify(committed));
  check((await text('#group-lag')) === '5', await text('#group-lag'));
  await shot('group-reset');

  const deleteGroup = async (typed) => {
    await goto('#/groups/billing');
    await page.fill('#group-delete-name', typed);
    await page.click('#group-delete-submit');
    return first('#group-delete-ok, #group-delete-error');
  };
  res = await deleteGroup('billin');
  check(res.text.includes('type its exact id'), res.text);
  res = await deleteGroup('billing');
  check(res.id === 'group-delete-ok' && res.text.startsWith('Deleted group billing.'), res.text);
  r = fjord('groups', 'list', '--output', 'json');
  check(r.code === 0, r.err);
  check(!JSON.parse(r.out).map((g) => g.group).includes('billing'), r.out);
  if (login) {
    // The header names the logged-in user; "Log out" ends the session on the server and says so.
    await goto('');
    await page.locator('#logout').waitFor();
    check((await text('#user')) === login.split(':')[0], await text('#user'));
    const sessionCookie = async () => (await b.context.cookies()).find((c) => c.name === 'fjord_session');
    check(await sessionCookie(), 'a session cookie');
    await page.click('#logout');
    const done = await first('#logged-out');
    check(done.text.startsWith('Logged out: the session has ended'), done.text);
    check(!(await sessionCookie()), 'the session cookie is cleared');
    await shot('logged-out');
  }
  console.log(`ok overview loaded in ${(loadMs / 1000).toFixed(2)}s`);
}, closeConsumer);
