// What the dashboard's browser scripts share: Debian's Chromium (never a browser of playwright's own) driven by
// playwright-core, a page opened per view, bounded waits, screenshots, and the fjord CLI.
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const CHROMIUM = '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-dev-shm-usage',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Fails the script with `msg` (an exception: `main` prints it, closes the browser and exits 1). */
function check(cond, msg) {
  if (!cond) throw new Error(`FAIL: ${typeof msg === 'string' ? msg : JSON.stringify(msg)}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `f` (async) until it returns something truthy, at most `ms`; then fails naming `what` (a string, or
 * a function, async or not, that says what the page shows). */
async function until(f, what, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() >= deadline) {
      check(false, `timed out after ${ms} ms waiting for ${typeof what === 'function' ? await what() : what}`);
    }
    await sleep(200);
  }
}

/** A browser, one context and page with a 1280x1000 viewport, and the page helpers bound to `base`. */
async function open(base, shots, wait) {
  fs.mkdirSync(shots, { recursive: true });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: 60000 });
  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  context.setDefaultTimeout(wait);
  context.setDefaultNavigationTimeout(30000);
  const page = await context.newPage();
  const b = {
    browser,
    context,
    page,
    /** Waits until the page says it rendered `want` (its body's data-loaded), and that it shows no error. */
    async loaded(want, p = page) {
      await p.waitForFunction((w) => document.body && document.body.getAttribute('data-loaded') === w, want);
      const errors = p.locator('#view > .error');
      if ((await errors.count()) > 0) check(false, `${want}: ${await errors.first().innerText()}`);
    },
    /** Opens a view in a freshly loaded page (a fragment-only navigation would keep the old form state). */
    async goto(hash, p = page) {
      await p.goto('about:blank');
      await p.goto(base + hash);
      await b.loaded(hash.replace(/^#/, '') || '/', p);
    },
    /** The rendered text of the first element matching `css` (as a user sees it, trimmed). */
    async text(css, p = page) {
      return (await p.locator(css).first().innerText()).trim();
    },
    /** The rendered texts of every element matching `css`, in order. */
    async texts(css, p = page) {
      return (await p.locator(css).allInnerTexts()).map((t) => t.trim());
    },
    async attr(css, name, p = page) {
      return p.locator(css).first().getAttribute(name);
    },
    async count(css, p = page) {
      return p.locator(css).count();
    },
    /** The first element matching any of the selectors, waited for; returns {id, text, cls}. */
    async first(css, p = page) {
      const el = p.locator(css).first();
      await el.waitFor({ state: 'attached' });
      return el.evaluate((e) => ({ id: e.id, text: e.innerText.trim(), cls: e.className }));
    },
    /** Cell texts of row `row` (1-based) of table `id`'s body. */
    async cells(id, row = 1, p = page) {
      return b.texts(`table#${id} > tbody > tr:nth-child(${row}) > td`, p);
    },
    async shot(name, p = page) {
      await p.screenshot({ path: path.join(shots, `${name}.png`) });
    },
  };
  return b;
}

/** Runs the fjord CLI against `bootstrap`; returns {code, out, err}. */
function fjord(bin, bootstrap, ...args) {
  const p = spawnSync(bin, [...args, '--bootstrap-server', bootstrap], { encoding: 'utf8', timeout: 60000 });
  if (p.error) throw p.error;
  return { code: p.status, out: p.stdout, err: p.stderr };
}

/** Runs `body(b)` with a browser; prints the failure and exits 1 if anything fails, always closing the browser. */
async function run(base, shots, wait, body, cleanup = async () => {}) {
  let b = null;
  let failed = null;
  try {
    b = await open(base, shots, wait);
    await body(b);
  } catch (e) {
    failed = e;
    if (b) await b.shot('failure').catch(() => {});
  }
  if (b) await b.browser.close().catch(() => {});
  await cleanup().catch((e) => console.error(`cleanup: ${e.stack || e}`));
  if (failed) {
    console.error(failed.stack || String(failed));
    process.exit(1);
  }
  // The last line says every check ran (the test requires it); exiting does not wait for idle connections.
  console.log('done');
  process.exit(0);
}

module.exports = { check, sleep, until, open, fjord, run };
