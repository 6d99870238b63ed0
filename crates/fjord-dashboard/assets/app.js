// Fjord dashboard: a hand-written module, no framework and no build step. It renders views from the JSON API
// under /api/ and routes on the URL fragment (#/topics/orders), so every view can be linked and reloaded.

const view = document.getElementById("view");
let timer = null;
// The page's live stream (an EventSource), closed when the route changes.
let live = null;
// What the page follows (follow's arguments), to open the stream again when a hidden tab is shown again.
let followed = null;
// Bumped by each route(): a page that finishes loading after the next navigation does not open its stream.
let generation = 0;

function closeLive() {
  if (live) live.close();
  live = null;
  followed = null;
}

// A hidden tab closes its stream (browsers allow 6 connections per host); shown again, it opens it again, and
// its first event (the `history`, or with the overview's `after` the points since its last one) brings the
// page up to date.
document.addEventListener("visibilitychange", () => {
  if (document.hidden) {
    if (live) live.close();
    live = null;
  } else if (followed && !live && followed.gen === generation) {
    const f = followed;
    follow(f.path, f.onEvent, f.fallback, f.gen);
  }
});

/**
 * Follows a live stream of the API (server-sent events: `history` first, then `sample` after each sampling
 * round) while the page shows it. After `MAX_LIVE_ERRORS` errors in a row without an event between them (the
 * server refused the stream, e.g. 503 when too many are open, or the connection keeps dropping), gives up and
 * calls `fallback`, which polls instead. The browser's EventSource sends the page's cookies and login.
 */
const MAX_LIVE_ERRORS = 3;
function follow(path, onEvent, fallback, gen) {
  // The page was left while it loaded: its stream is not wanted.
  if (gen !== generation) return null;
  closeLive();
  followed = { path, onEvent, fallback, gen };
  if (document.hidden) return null;
  // A function gives the path at each opening (the overview's `after` moves with the points it has).
  const es = new EventSource(location.origin + "/api" + (typeof path === "function" ? path() : path));
  live = es;
  let errors = 0;
  const on = (name) => es.addEventListener(name, (ev) => {
    errors = 0;
    onEvent(name, JSON.parse(ev.data));
  });
  on("history");
  on("sample");
  es.addEventListener("error", () => {
    errors += 1;
    // A refused stream (HTTP error answer) is CLOSED and not retried by the browser; a dropped one reconnects.
    if (errors >= MAX_LIVE_ERRORS || es.readyState === EventSource.CLOSED) {
      if (live === es) {
        closeLive();
        fallback();
      } else {
        es.close();
      }
    }
  });
  return es;
}

// ---- helpers ----

/** Builds an element: h("td", {class: "num"}, "42"). Children are text (escaped by the DOM) or nodes. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// The CSRF token: the server sets the `fjord_csrf` cookie with the page; every change repeats it in the
// X-CSRF-Token header, which another site's page cannot do. Made here when the cookie is missing (the server
// only compares the two).
function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)fjord_csrf=([^;]+)/);
  if (m) return m[1];
  const t = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
  document.cookie = `fjord_csrf=${t}; path=/; samesite=strict`;
  return t;
}

async function api(path, opts = {}) {
  const method = (opts.method || "GET").toUpperCase();
  const headers = {};
  if (opts.body) headers["content-type"] = "application/json";
  if (method !== "GET" && method !== "HEAD") headers["x-csrf-token"] = csrfToken();
  // From the origin, not the page's URL: a page opened as http://user:password@host/ must not make fetch
  // refuse a URL with credentials (the browser sends the login it keeps for the origin).
  const res = await fetch(location.origin + "/api" + path, { ...opts, headers });
  let body;
  try {
    body = await res.json();
  } catch {
    body = { error: `HTTP ${res.status} without a JSON body` };
  }
  if (!res.ok) {
    const e = new Error(body.error || `HTTP ${res.status}`);
    e.status = res.status;
    e.notRunning = body.not_running;
    throw e;
  }
  return body;
}

const enc = encodeURIComponent;

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + u[i];
}

function rate(n) { return bytes(n) + "/s"; }
// A record timestamp as ISO 8601; one outside what a Date holds (|ms| > 8.64e15) stays the raw number.
function when(ts) {
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? String(ts) : d.toISOString();
}
// A field the API cut short says so, with its full size.
function cut(obj, name) {
  return obj[`${name}_truncated`] ? ` … (truncated; ${bytes(obj[`${name}_size`])} in all)` : "";
}
function dash(v) { return v === null || v === undefined ? "–" : String(v); }

function card(k, v, id) {
  return h("div", { class: "card" }, h("div", { class: "v", id }, v), h("div", { class: "k" }, k));
}

function table(id, headers, rows) {
  return h("table", { id },
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { class: x.endsWith("#") ? "num" : null }, x.replace(/#$/, ""))))),
    h("tbody", {}, rows));
}

function errorBox(e) { return h("p", { class: "error", role: "alert" }, e.message || String(e)); }

/** Previous/next buttons for a server-side page: {total, offset, limit}. */
function pager(page, go) {
  const { total, offset, limit } = page;
  const last = Math.min(offset + limit, total);
  return h("div", { class: "bar" },
    h("span", { class: "muted" }, total === 0 ? "none" : `${offset + 1}–${last} of ${total}`),
    h("button", { class: "secondary", disabled: offset === 0, onclick: () => go(Math.max(0, offset - limit)) }, "Previous"),
    h("button", { class: "secondary", disabled: last >= total, onclick: () => go(offset + limit) }, "Next"));
}

function b64bytes(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** A record field (base64 or null) shown as text, pretty JSON or hex. */
function decode(b64, format) {
  if (b64 === null || b64 === undefined) return "null";
  const b = b64bytes(b64);
  if (format === "hex") return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ");
  const text = new TextDecoder("utf-8", { fatal: false }).decode(b);
  if (format === "json") {
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text + "\n(not JSON)"; }
  }
  return text;
}

/** "auto": UTF-8 JSON pretty, other UTF-8 text as it is, anything else (binary) hex. */
function decodeAuto(b64) {
  if (b64 === null || b64 === undefined) return "null";
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(b64bytes(b64));
  } catch {
    return decode(b64, "hex");
  }
  // Control characters other than whitespace mark binary data that happens to be valid UTF-8.
  if (/[\u0000-\u0008\u000e-\u001f]/.test(text)) return decode(b64, "hex");
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; }
}

/** The formats a record field may be shown in; "registry" and "auto" need the server's `decode=registry`. */
const FORMATS = [["text", "text"], ["json", "JSON (pretty)"], ["hex", "hex"],
  ["registry", "Avro/JSON Schema/Protobuf (registry)"], ["auto", "auto (registry, JSON, text or hex)"]];
const wantsRegistry = (format) => format === "registry" || format === "auto";

/** A record's key or value (`name`) in `format`: with the registry, as the server decoded it (or why it could
 * not, then its bytes in hex); a field not in the registry's wire format as text ("registry") or as "auto"
 * finds it. */
function shownField(m, name, format) {
  const d = wantsRegistry(format) ? m[`${name}_decoded`] : undefined;
  const plain = () => (format === "auto" ? decodeAuto(m[name]) : decode(m[name], format === "registry" ? "text" : format)) + cut(m, name);
  if (!d) return plain();
  // `json` keeps the fields in the schema's order (`value`'s keys come sorted).
  if ("value" in d) return `schema ${d.schema_id} (${d.schema_type})\n${JSON.stringify("json" in d ? JSON.parse(d.json) : d.value, null, 2)}`;
  if (d.schema_id === undefined) return plain();
  return `undecodable (schema id ${d.schema_id}): ${d.error}\n${decode(m[name], "hex")}${cut(m, name)}`;
}

/** A header's value in `format` (headers are never registry-encoded). */
function shownHeader(x, format) {
  return `${x.key}: ${format === "auto" ? decodeAuto(x.value) : decode(x.value, format === "registry" ? "text" : format)}${cut(x, "value")}`;
}

// ---- overview ----

function drawChart(canvas, history, series = [["bytes_in", "#0b6bcb"], ["bytes_out", "#dd6b20"]], fmt = rate) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, hgt = canvas.clientHeight;
  canvas.width = w * dpr; canvas.height = hgt * dpr;
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, hgt);
  const pad = 40;
  const max = Math.max(1, ...history.map((p) => Math.max(...series.map(([k]) => p[k]))));
  g.strokeStyle = "#dde3ea"; g.fillStyle = "#6b7785"; g.font = "11px sans-serif";
  g.beginPath(); g.moveTo(pad, 8); g.lineTo(pad, hgt - 20); g.lineTo(w - 8, hgt - 20); g.stroke();
  g.fillText(fmt(max), 2, 14);
  canvas.dataset.points = String(history.length);
  if (history.length < 2) { g.fillText("collecting samples…", pad + 10, hgt / 2); return; }
  const t0 = history[0].at_ms, t1 = history[history.length - 1].at_ms;
  const x = (t) => pad + ((t - t0) / Math.max(1, t1 - t0)) * (w - pad - 10);
  const y = (v) => hgt - 20 - (v / max) * (hgt - 30);
  for (const [key, color] of series) {
    g.strokeStyle = color; g.lineWidth = 1.5; g.beginPath();
    history.forEach((p, i) => (i ? g.lineTo(x(p.at_ms), y(p[key])) : g.moveTo(x(p.at_ms), y(p[key]))));
    g.stroke();
  }
  g.fillStyle = "#6b7785";
  g.fillText(`${Math.round((t1 - t0) / 60000)} min`, pad, hgt - 5);
}

function brokerRows(o) {
  return o.brokers.map((b) => h("tr", {},
    h("td", {}, b.id), h("td", {}, `${b.host}:${b.port}`), h("td", {}, dash(b.rack)),
    h("td", {}, b.live ? "live" : "fenced"), h("td", {}, b.controller ? "yes" : "")));
}

/** The overview's cards and brokers table, updated in place from a live event. */
function updateOverview(o) {
  const set = (id, v) => {
    const el = document.getElementById(id);
    if (el && el.textContent !== String(v)) el.textContent = v;
  };
  set("ov-brokers", o.brokers.length);
  set("ov-topics", o.topics);
  set("ov-partitions", o.partitions);
  set("ov-urp", o.under_replicated_partitions);
  set("ov-offline", o.offline_partitions);
  set("ov-groups", o.groups);
  set("ov-in", rate(o.bytes_in_per_sec));
  set("ov-out", rate(o.bytes_out_per_sec));
  document.querySelector("#brokers-table tbody")?.replaceChildren(...brokerRows(o));
}

async function overview() {
  const gen = generation;
  const o = await api("/overview");
  const brokers = brokerRows(o);
  const canvas = h("canvas", { id: "rate-chart" });
  view.replaceChildren(
    h("h1", {}, "Overview"),
    h("div", { class: "cards" },
      card("brokers", o.brokers.length, "ov-brokers"),
      card("topics", o.topics, "ov-topics"),
      card("partitions", o.partitions, "ov-partitions"),
      card("under-replicated", o.under_replicated_partitions, "ov-urp"),
      card("offline partitions", o.offline_partitions, "ov-offline"),
      card("consumer groups", o.groups, "ov-groups"),
      card("bytes in", rate(o.bytes_in_per_sec), "ov-in"),
      card("bytes out", rate(o.bytes_out_per_sec), "ov-out")),
    h("h2", {}, "Throughput, last 15 minutes"),
    h("div", { class: "legend" }, h("span", { class: "in" }, "■ bytes in/s"), h("span", { class: "out" }, "■ bytes out/s")),
    canvas,
    h("h2", {}, "Brokers"),
    table("brokers-table", ["id", "address", "rack", "state", "controller"], brokers),
    h("p", { class: "muted" }, `cluster ${o.cluster_id} · this is node ${o.node_id} · Fjord ${o.version}`));
  let points = o.history;
  const keep = o.history_samples || 180;
  drawChart(canvas, points);
  // Live: each sampling round's point arrives over server-sent events and is drawn in place (the page, its
  // scroll position and the chart stay). Without the stream, the page reloads its data on a timer, as before.
  canvas.dataset.live = "connecting";
  // The page has the history up to its last point: the stream's first event brings only what came after it
  // (an `after` the server does not know, e.g. after its restart, brings the whole history instead).
  const path = () => (points.length ? `/overview/stream?after=${points[points.length - 1].at_ms}` : "/overview/stream");
  follow(path, (name, ev) => {
    updateOverview(ev);
    const last = points.length ? points[points.length - 1].at_ms : -Infinity;
    points = (name === "history" ? ev.history : points.concat(ev.history.filter((p) => p.at_ms > last))).slice(-keep);
    canvas.dataset.live = "on";
    drawChart(canvas, points);
  }, () => {
    canvas.dataset.live = "polling";
    timer = setTimeout(() => route(), o.sample_interval_ms || 5000);
  }, gen);
}

// ---- topics ----

function createTopicForm() {
  const name = h("input", { id: "create-name", required: true, placeholder: "orders" });
  const parts = h("input", { id: "create-partitions", type: "number", placeholder: "default" });
  const rf = h("input", { id: "create-rf", type: "number", placeholder: "default" });
  const out = h("div", { id: "create-result" });
  const form = h("form", { id: "create-form" },
    h("label", {}, "name", name), h("label", {}, "partitions", parts), h("label", {}, "replication factor", rf),
    h("button", { id: "create-submit", type: "submit" }, "Create topic…"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const body = { name: name.value.trim() };
    if (parts.value !== "") body.partitions = Number(parts.value);
    if (rf.value !== "") body.replication_factor = Number(rf.value);
    // A confirmation step: nothing is written until the summary is confirmed.
    const confirm = h("button", { id: "create-confirm", type: "button", onclick: async () => {
      confirm.disabled = true;
      try {
        const r = await api("/topics", { method: "POST", body: JSON.stringify(body) });
        out.replaceChildren(h("p", { class: "ok", id: "form-ok" }, r.message, " ", h("a", { href: `#/topics/${enc(r.name)}` }, "Open it")));
      } catch (e) {
        out.replaceChildren(h("p", { class: "error", id: "form-error", role: "alert" }, e.message));
      }
    } }, "Confirm");
    out.replaceChildren(h("div", { class: "confirm" },
      `Create topic "${body.name}" with ${body.partitions ?? "the default number of"} partitions, replication factor ${body.replication_factor ?? "default"}? `,
      confirm, " ", h("button", { type: "button", class: "secondary", onclick: () => out.replaceChildren() }, "Cancel")));
  });
  return h("div", {}, h("h2", {}, "Create a topic"), form, out);
}

async function topics(params) {
  const filter = params.get("filter") || "";
  const offset = Number(params.get("offset") || 0);
  const internal = params.get("internal") === "true";
  const go = (o, f = filter, i = internal) => {
    location.hash = `#/topics?filter=${enc(f)}&offset=${o}&internal=${i}`;
  };
  const page = await api(`/topics?filter=${enc(filter)}&offset=${offset}&limit=50&internal=${internal}`);
  const rows = page.topics.map((t) => h("tr", {},
    h("td", {}, h("a", { href: `#/topics/${enc(t.name)}` }, t.name)),
    h("td", { class: "num" }, t.partitions), h("td", { class: "num" }, t.replication_factor),
    h("td", { class: "num" }, bytes(t.size_bytes)), h("td", { class: "num" }, t.messages_in_total),
    h("td", {}, dash(t.retention_ms))));
  const input = h("input", { id: "topic-filter", value: filter, placeholder: "filter by name" });
  const box = h("input", { type: "checkbox", id: "topic-internal", checked: internal });
  view.replaceChildren(
    h("h1", {}, "Topics"),
    h("form", { onsubmit: (ev) => { ev.preventDefault(); go(0, input.value, box.checked); } },
      input, h("label", {}, h("span", {}, "internal"), box), h("button", { type: "submit" }, "Filter")),
    pager(page, (o) => go(o)),
    table("topics-table", ["topic", "partitions#", "replication#", "size here#", "messages in (since start)#", "retention.ms override"], rows),
    createTopicForm());
}

function messageBrowser(t) {
  const part = h("select", { id: "msg-partition" },
    Array.from({ length: t.partitions }, (_, i) => h("option", { value: i }, `partition ${i}`)));
  const mode = h("select", { id: "msg-mode" }, h("option", { value: "latest" }, "latest N"), h("option", { value: "offset" }, "from offset"),
    h("option", { value: "timestamp" }, "from time"));
  const num = h("input", { id: "msg-number", value: 20 });
  const fmt = h("select", { id: "msg-format" }, FORMATS.map(([v, label]) => h("option", { value: v }, label)));
  // Unticked (a consumer's default, read_uncommitted): every record up to the high watermark, those of aborted
  // transactions marked. Ticked: what a read_committed consumer sees.
  const committed = h("input", { type: "checkbox", id: "msg-committed" });
  const out = h("div", { id: "msg-result" });
  let last = null;
  const render = () => {
    if (!last) return;
    const rows = last.messages.map((m) => h("tr", { class: m.aborted ? "aborted" : null },
      h("td", { class: "num" }, m.offset, m.aborted ? h("span", { class: "badge", title: "written in a transaction that was aborted" }, " aborted") : null),
      h("td", {}, when(m.timestamp)),
      h("td", { class: "msg-key" }, h("pre", {}, shownField(m, "key", fmt.value))),
      h("td", { class: "msg-headers" }, m.headers.map((x) => h("pre", {}, shownHeader(x, fmt.value)))),
      h("td", { class: "msg-value" }, h("pre", {}, shownField(m, "value", fmt.value)))));
    out.replaceChildren(
      h("p", { class: "muted" }, `partition ${last.partition}: offsets ${last.start_offset}–${last.end_offset} (last stable ${last.last_stable_offset}) · ${last.isolation} · ${last.messages.length} shown from ${last.from} · next offset ${last.next_offset}${last.removed ? ` · retention removed offsets ${last.removed.from}–${last.removed.to - 1} before they were read` : ""}`),
      table("messages-table", ["offset#", "timestamp", "key", "headers", "value"], rows));
  };
  // Records loaded without decoding are loaded again when the registry is picked.
  fmt.addEventListener("change", () => (wantsRegistry(fmt.value) && last && !last.decoded ? form.requestSubmit() : render()));
  const form = h("form", { id: "msg-form", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      let q;
      if (mode.value === "latest") q = `latest=${enc(num.value)}`;
      else if (mode.value === "offset") q = `offset=${enc(num.value)}&limit=50`;
      else {
        const v = num.value.trim();
        const ms = /^\d+$/.test(v) ? Number(v) : Date.parse(v);
        if (Number.isNaN(ms)) throw new Error(`"${v}" is not a time: give milliseconds since 1970 or a date such as 2026-11-30T10:00:00Z`);
        q = `timestamp=${ms}&limit=50`;
      }
      const decoded = wantsRegistry(fmt.value);
      const isolation = committed.checked ? "read_committed" : "read_uncommitted";
      last = await api(`/topics/${enc(t.name)}/messages?partition=${part.value}&${q}&isolation=${isolation}${decoded ? "&decode=registry" : ""}`);
      last.decoded = decoded;
      render();
    } catch (e) { out.replaceChildren(errorBox(e)); }
  } }, part, mode, h("label", {}, "N, offset or time", num), h("label", {}, "show as", fmt),
  h("label", { title: "Only committed records, up to the last stable offset (as a read_committed consumer)" }, committed, " read_committed"),
  h("button", { id: "msg-load", type: "submit" }, "Load"));
  // Toggling the isolation loads the records again.
  committed.addEventListener("change", () => last && form.requestSubmit());
  return h("div", {}, h("h2", {}, "Messages"), h("p", { class: "muted" }, "At most 100 records and 4 MiB of keys, values and headers per load; one longer than 64 KiB is cut short. The registry format decodes records in Confluent's wire format with their schema (Avro, JSON Schema, Protobuf) from the registry this process runs."), form, out);
}

// Reads a server-sent-event stream from a fetch answer: calls onEvent(name, data) for each event.
async function readEvents(res, onEvent) {
  const reader = res.body.getReader();
  const text = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += text.decode(value, { stream: true });
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const frame = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let name = "message", data = "";
      for (const line of frame.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      onEvent(name, data ? JSON.parse(data) : null);
    }
  }
}

// Offsets retention removed before the search reached them (it went on from the new log start).
const removedText = (removed) => (removed && removed.length
  ? `; retention removed ${removed.map((r) => `partition ${r.partition} offsets ${r.from}–${r.to - 1}`).join(", ")} before they were read`
  : "");

// Server-side search of a bounded range (by offsets or by time) for a text in keys, values or headers: matches
// arrive as the scan finds them, with its progress; Stop (or leaving the page) aborts the request, which ends the
// scan on the server.
function messageSearch(t) {
  const text = h("input", { id: "search-text", placeholder: "text to find", required: true, maxlength: 1024 });
  const where = h("select", { id: "search-in" }, h("option", { value: "any" }, "key, value or headers"),
    h("option", { value: "key" }, "key"), h("option", { value: "value" }, "value"), h("option", { value: "headers" }, "headers"));
  const icase = h("input", { id: "search-icase", type: "checkbox" });
  const committed = h("input", { id: "search-committed", type: "checkbox" });
  const part = h("select", { id: "search-partition" }, h("option", { value: "" }, "all partitions"),
    Array.from({ length: t.partitions }, (_, i) => h("option", { value: i }, `partition ${i}`)));
  const by = h("select", { id: "search-by" }, h("option", { value: "offset" }, "offsets"), h("option", { value: "time" }, "time"));
  const from = h("input", { id: "search-from", placeholder: "from (start if empty)" });
  const to = h("input", { id: "search-to", placeholder: "to (end if empty)" });
  const max = h("input", { id: "search-max", type: "number", value: 1000000, min: 1, max: 10000000 });
  const fmt = h("select", { id: "search-format" }, FORMATS.map(([v, label]) => h("option", { value: v }, label)));
  const progress = h("progress", { id: "search-progress", max: 1, value: 0 });
  const status = h("span", { id: "search-status", class: "muted" });
  const stop = h("button", { id: "search-stop", type: "button", class: "secondary", disabled: true }, "Stop");
  const go = h("button", { id: "search-go", type: "submit" }, "Search");
  const out = h("div", { id: "search-result" });
  const found = [];
  let controller = null;
  const render = () => {
    const rows = found.map((m) => h("tr", { class: m.aborted ? "aborted" : null },
      h("td", { class: "num" }, m.partition),
      h("td", { class: "num" }, m.offset, m.aborted ? h("span", { class: "badge", title: "written in a transaction that was aborted" }, " aborted") : null),
      h("td", {}, when(m.timestamp)),
      h("td", { class: "msg-key" }, h("pre", {}, shownField(m, "key", fmt.value))),
      h("td", { class: "msg-headers" }, m.headers.map((x) => h("pre", {}, shownHeader(x, fmt.value)))),
      h("td", { class: "msg-value" }, h("pre", {}, shownField(m, "value", fmt.value)))));
    out.replaceChildren(table("search-table", ["partition#", "offset#", "timestamp", "key", "headers", "value"], rows));
  };
  // Matches found without the registry's decoding are searched for again when a format needs it.
  let decodedSearch = false;
  fmt.addEventListener("change", () => (wantsRegistry(fmt.value) && found.length && !decodedSearch && !controller ? form.requestSubmit() : render()));
  // A bound as the API takes it: offsets are whole numbers, times are ms or a date and time.
  const bound = (v, name) => {
    v = v.trim();
    if (!v) return "";
    if (by.value === "offset") {
      if (!/^\d+$/.test(v)) throw new Error(`"${v}" is not an offset: give a whole number, or search by time`);
      return `&${name}_offset=${v}`;
    }
    const ms = /^\d+$/.test(v) ? Number(v) : Date.parse(v);
    if (Number.isNaN(ms)) throw new Error(`"${v}" is not a time: give milliseconds since 1970 or a date such as 2026-11-30T10:00:00Z`);
    return `&${name}_time=${ms}`;
  };
  const finish = (message, cls = "muted") => {
    status.className = cls;
    status.textContent = message;
    stop.disabled = true;
    go.disabled = false;
    controller = null;
  };
  stop.addEventListener("click", () => { if (controller) controller.abort(); });
  const form = h("form", { id: "search-form", onsubmit: async (ev) => {
    ev.preventDefault();
    let q;
    try {
      q = `q=${enc(text.value)}&in=${where.value}&ignore_case=${icase.checked}&max_records=${enc(max.value)}&limit=100`
        + (part.value === "" ? "" : `&partition=${part.value}`) + bound(from.value, "from") + bound(to.value, "to")
        + (wantsRegistry(fmt.value) ? "&decode=registry" : "")
        + `&isolation=${committed.checked ? "read_committed" : "read_uncommitted"}`;
      decodedSearch = wantsRegistry(fmt.value);
    } catch (e) { out.replaceChildren(errorBox(e)); return; }
    found.length = 0;
    render();
    progress.value = 0;
    status.className = "muted";
    status.textContent = "starting…";
    controller = new AbortController();
    stop.disabled = false;
    go.disabled = true;
    const mine = controller;
    // Another view of the dashboard ends the search too.
    window.addEventListener("hashchange", () => mine.abort(), { once: true });
    try {
      const res = await fetch(`${location.origin}/api/topics/${enc(t.name)}/search?${q}`, { signal: mine.signal });
      if (!res.ok) {
        let body;
        try { body = await res.json(); } catch { body = { error: `HTTP ${res.status}` }; }
        throw new Error(body.error || `HTTP ${res.status}`);
      }
      await readEvents(res, (name, d) => {
        if (name === "progress") {
          progress.max = Math.max(d.total, 1);
          progress.value = d.scanned;
          status.textContent = `scanned ${d.scanned} of at most ${d.total} records (partition ${d.partition}, offset ${d.offset}) · ${found.length} found${removedText(d.removed)}`;
        } else if (name === "match") {
          found.push(d);
          render();
        } else if (name === "done") {
          progress.value = progress.max;
          const why = { end: "searched the whole range", limit: "stopped at 100 matches", max_records: "stopped at the record limit", time_limit: "stopped at the time limit (60 s)" }[d.reason] || d.reason;
          const resume = d.next ? `; continue from partition ${d.next.partition}, offset ${d.next.offset}` : "";
          const skipped = d.skipped_partitions.length ? `; partitions ${d.skipped_partitions.join(", ")} are on other brokers` : "";
          finish(`done: ${d.matches} found in ${d.scanned} records, ${why}${resume}${skipped}${removedText(d.removed)}`, "ok");
        } else if (name === "error") {
          finish(d.error, "error");
        }
      });
      if (controller === mine) finish(`${found.length} found; the search ended early`);
    } catch (e) {
      if (e.name === "AbortError") finish(`stopped: ${found.length} found`);
      else { finish(""); out.replaceChildren(errorBox(e)); }
    }
  } }, h("label", {}, "text", text), h("label", {}, "in", where), h("label", {}, "ignore case", icase),
    h("label", { title: "Only committed records, up to the last stable offset (as a read_committed consumer)" }, committed, " read_committed"), part, by,
    h("label", {}, "from", from), h("label", {}, "to", to), h("label", {}, "read at most", max), h("label", {}, "show as", fmt), go, stop);
  return h("div", {}, h("h2", {}, "Search"),
    h("p", { class: "muted" }, "Scans on the server: at most 10,000,000 records and 60 s per search, up to 100 matches; a time range ends at the first record stamped after it."),
    form, h("div", { class: "bar" }, progress, status), out);
}

function dangerZone(t) {
  const out = h("div", { id: "admin-result" });
  const count = h("input", { id: "add-count", type: "number", value: t.partitions + 1 });
  const grow = h("form", { id: "add-form", onsubmit: (ev) => {
    ev.preventDefault();
    const n = Number(count.value);
    out.replaceChildren(h("div", { class: "confirm" }, `Grow "${t.name}" from ${t.partitions} to ${n} partitions? Keys will map to different partitions. `,
      h("button", { id: "add-confirm", type: "button", onclick: async () => {
        try {
          const r = await api(`/topics/${enc(t.name)}/partitions`, { method: "POST", body: JSON.stringify({ count: n }) });
          out.replaceChildren(h("p", { class: "ok" }, r.message));
        } catch (e) { out.replaceChildren(h("p", { class: "error", id: "form-error", role: "alert" }, e.message)); }
      } }, "Confirm")));
  } }, h("label", {}, "new partition count", count), h("button", { type: "submit" }, "Add partitions…"));
  const typed = h("input", { id: "delete-confirm-name", placeholder: t.name });
  const del = h("form", { id: "delete-form", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const r = await api(`/topics/${enc(t.name)}`, { method: "DELETE", body: JSON.stringify({ confirm: typed.value }) });
      out.replaceChildren(h("p", { class: "ok" }, r.message, " ", h("a", { href: "#/topics" }, "Back to topics")));
    } catch (e) { out.replaceChildren(h("p", { class: "error", id: "form-error", role: "alert" }, e.message)); }
  } }, h("label", {}, `type "${t.name}" to delete`, typed), h("button", { class: "danger", type: "submit", id: "delete-submit" }, "Delete topic"));
  return h("div", {}, h("h2", {}, "Change"), grow, del, out);
}

async function topicPage(name, params) {
  const offset = Number(params.get("offset") || 0);
  const [t, parts] = await Promise.all([
    api(`/topics/${enc(name)}`),
    api(`/topics/${enc(name)}/partitions?offset=${offset}&limit=100`),
  ]);
  const rows = parts.partitions.map((p) => h("tr", {},
    h("td", { class: "num" }, p.partition), h("td", { class: "num" }, p.leader),
    h("td", {}, p.replicas.join(",")), h("td", {}, p.isr.join(",")),
    h("td", { class: "num" }, dash(p.start_offset)), h("td", { class: "num" }, dash(p.end_offset)),
    h("td", { class: "num" }, bytes(p.size_bytes))));
  const configRows = (list) => list.map((c) => h("tr", {}, h("td", {}, c.name), h("td", { class: "config-value" }, dash(c.value)), h("td", {}, c.source)));
  const configs = table("configs-table", ["name", "value", "source"], configRows(t.configs));
  view.replaceChildren(
    h("h1", {}, "Topic ", h("span", { id: "topic-name" }, t.name)),
    h("div", { class: "cards" }, card("partitions", t.partitions), card("replication factor", t.replication_factor), card("size here", bytes(t.size_bytes))),
    h("h2", {}, "Partitions"),
    pager(parts, (o) => { location.hash = `#/topics/${enc(name)}?offset=${o}`; }),
    table("partitions-table", ["partition#", "leader#", "replicas", "ISR", "start offset#", "end offset#", "size#"], rows),
    messageBrowser(t),
    messageSearch(t),
    h("h2", {}, "Configs"),
    configs,
    t.internal ? "" : configForm(t, async () => {
      const fresh = await api(`/topics/${enc(name)}`);
      configs.querySelector("tbody").replaceChildren(...configRows(fresh.configs));
    }),
    t.internal ? h("p", { class: "muted" }, "Internal topic: the broker manages it.") : dangerZone(t));
}

/** Set or delete one topic config: the broker validates the change first (nothing written), then Apply after
 * confirmation; the configs table is read again once it is applied. */
function configForm(t, refresh) {
  const key = h("input", { id: "config-key", list: "config-names", placeholder: "retention.ms", required: true });
  const names = h("datalist", { id: "config-names" }, t.configs.map((c) => h("option", { value: c.name })));
  const op = h("select", { id: "config-op" }, h("option", { value: "set" }, "set to"), h("option", { value: "delete" }, "delete (back to the default)"));
  const value = h("input", { id: "config-value", placeholder: "value" });
  const out = h("div", { id: "config-result" });
  const body = (validate) => {
    const k = key.value.trim();
    const b = op.value === "set" ? { set: { [k]: value.value } } : { delete: [k] };
    return JSON.stringify({ ...b, validate_only: validate });
  };
  const form = h("form", { id: "config-form", onsubmit: async (ev) => {
    ev.preventDefault();
    const k = key.value.trim();
    const summary = op.value === "set" ? `Set ${k} of "${t.name}" to ${value.value}?` : `Delete ${k} of "${t.name}" (back to the broker default)?`;
    const sent = body(false);
    try {
      const check = await api(`/topics/${enc(t.name)}/configs`, { method: "POST", body: body(true) });
      const box = h("div", {});
      const checked = h("p", { class: "ok", id: "config-check" }, check.message);
      confirmStep(box, "config", summary, async () => {
        const r = await api(`/topics/${enc(t.name)}/configs`, { method: "POST", body: sent });
        checked.remove();
        await refresh();
        return r;
      });
      out.replaceChildren(checked, box);
    } catch (e) { out.replaceChildren(h("p", { class: "error", id: "config-error", role: "alert" }, e.message)); }
  } }, h("label", {}, "config", key), names, h("label", {}, "change", op), h("label", {}, "value", value),
  h("button", { id: "config-validate", type: "submit" }, "Validate…"));
  return h("div", {}, h("h3", {}, "Change a config"), form, out);
}

// ---- groups ----

async function groups(params) {
  // Every filter and the sort live in the URL: a reload or a shared link shows the same page.
  const keys = ["filter", "state", "sort", "order", "min_lag", "min_members", "max_members"];
  const cur = Object.fromEntries(keys.map((k) => [k, params.get(k) || ""]));
  const offset = Number(params.get("offset") || 0);
  const qs = (o, v) => keys.filter((k) => v[k] !== "").map((k) => `${k}=${enc(v[k])}`).concat([`offset=${o}`]).join("&");
  const go = (o, v = cur) => { location.hash = `#/groups?${qs(o, v)}`; };
  const t0 = performance.now();
  const page = await api(`/groups?${qs(offset, cur)}&limit=50`);
  const took = Math.round(performance.now() - t0);
  const input = h("input", { id: "group-filter", value: cur.filter, placeholder: "filter by id" });
  const select = (id, value, options) => h("select", { id },
    options.map(([v, label]) => h("option", { value: v, selected: v === value }, label)));
  const state = select("group-state-filter", cur.state, [["", "any state"], ...["Stable", "Empty", "PreparingRebalance", "CompletingRebalance", "Dead", "Assigning", "Reconciling"].map((s) => [s.toLowerCase(), s])]);
  const sorter = select("group-sort", cur.sort || "id", [["id", "by id"], ["lag", "by lag"], ["members", "by members"], ["state", "by state"]]);
  const order = select("group-order", cur.order, [["", "default order"], ["asc", "ascending"], ["desc", "descending"]]);
  const num = (id, value, placeholder) => h("input", { id, type: "number", min: 0, value, placeholder, style: "width: 8em" });
  const minLag = num("group-min-lag", cur.min_lag, "min lag");
  const minMembers = num("group-min-members", cur.min_members, "min members");
  const maxMembers = num("group-max-members", cur.max_members, "max members");
  const read = () => ({ filter: input.value.trim(), state: state.value, sort: sorter.value, order: order.value,
    min_lag: minLag.value, min_members: minMembers.value, max_members: maxMembers.value });
  const rows = page.groups.map((g) => h("tr", {},
    h("td", {}, h("a", { href: `#/groups/${enc(g.id)}` }, g.id)), h("td", {}, g.state), h("td", {}, g.type),
    h("td", { class: "num" }, g.members), h("td", { class: "num" }, g.lag)));
  view.replaceChildren(
    h("h1", {}, "Consumer groups"),
    h("form", { id: "group-form", onsubmit: (ev) => { ev.preventDefault(); go(0, read()); } },
      h("label", {}, "id", input), h("label", {}, "state", state), h("label", {}, "lag at least", minLag),
      h("label", {}, "members from", minMembers), h("label", {}, "to", maxMembers), h("label", {}, "sort", sorter),
      h("label", {}, "order", order), h("button", { type: "submit", id: "group-apply" }, "Apply")),
    pager(page, (o) => go(o)),
    table("groups-table", ["group", "state", "type", "members#", "lag#"], rows),
    h("p", { class: "muted", id: "groups-timing" }, `Groups coordinated by this broker · sorted and filtered by the broker · answered in ${took} ms.`));
}

/** How long until the group catches up, from the lag's pace over the last minutes (the server estimates it). */
function duration(s) {
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} days`;
}

function catchUp(c) {
  const per = c.lag_change_per_sec === null ? "" : Math.abs(c.lag_change_per_sec).toFixed(1);
  const span = duration(c.window_ms / 1000);
  const text = {
    caught_up: "Caught up: no lag.",
    catching_up: `Catching up: about ${duration(c.seconds || 0)} to go at the pace of the last ${span} (lag falling by ${per} records/s).`,
    falling_behind: `Falling behind: the lag grew by ${per} records/s over the last ${span}; no catch-up in sight.`,
    stalled: `Not catching up: the lag has not changed over the last ${span} (nothing committed, or consumed only as fast as produced).`,
    unknown: "Collecting samples (every 5 s) for an estimate…",
  }[c.state] || c.state;
  return h("p", { id: "catch-up", "data-state": c.state }, text);
}

async function groupPage(id) {
  const gen = generation;
  const g = await api(`/groups/${enc(id)}`);
  const lagCanvas = h("canvas", { id: "lag-chart" });
  const members = g.members.map((m) => h("tr", {},
    h("td", {}, m.member_id), h("td", { class: "member-client" }, m.client_id), h("td", { class: "member-host" }, m.host),
    h("td", { class: "num member-count" }, m.partition_count),
    h("td", {}, m.assignment.map((a) => `${a.topic}[${a.partitions.join(",")}]`).join(" "))));
  view.replaceChildren(
    h("h1", {}, "Group ", h("span", { id: "group-id" }, g.id)),
    h("div", { class: "cards" },
      card("state", g.state, "group-state"), card("protocol", `${g.protocol_type || "–"} / ${g.protocol || "–"}`, "group-protocol"),
      card("members", g.members.length, "group-members"), card("total lag", g.lag, "group-lag")),
    h("h2", {}, "Lag, last 15 minutes"),
    catchUp(g.catch_up),
    lagCanvas,
    h("h2", {}, "Members (partitions per member: is the work balanced?)"),
    table("members-table", ["member id", "client id", "host", "partitions#", "assignment"], members),
    h("h2", {}, "Committed offsets and lag"),
    offsetsTable(g),
    resetForm(g),
    deleteGroupForm(g));
  const lagSeries = [["lag", "#c53030"]], lagFmt = (n) => `${n} records`;
  let points = g.lag_history;
  drawChart(lagCanvas, points, lagSeries, lagFmt);
  // Live: the lag chart, the total lag and the catch-up estimate follow each sampling round (the forms below
  // keep what was typed). Without the stream the chart stays as loaded.
  follow(`/groups/${enc(id)}/lag/stream`, (name, ev) => {
    const last = points.length ? points[points.length - 1].at_ms : -Infinity;
    points = (name === "history" ? ev.lag_history : points.concat(ev.lag_history.filter((p) => p.at_ms > last))).slice(-180);
    drawChart(lagCanvas, points, lagSeries, lagFmt);
    document.getElementById("catch-up")?.replaceWith(catchUp(ev.catch_up));
    const lag = document.getElementById("group-lag");
    if (lag && name === "sample") lag.textContent = ev.lag;
  }, () => {}, gen);
}

function offsetsTable(g) {
  return table("offsets-table", ["topic", "partition#", "committed#", "end offset#", "lag#", "member"], g.offsets.map((o) => h("tr", {},
    h("td", {}, o.topic), h("td", { class: "num" }, o.partition), h("td", { class: "num committed" }, o.committed),
    h("td", { class: "num" }, dash(o.end_offset)), h("td", { class: "num lag" }, dash(o.lag)), h("td", {}, dash(o.member)))));
}

/** After a change of the group's offsets: its committed offsets and lag as the broker has them now. */
async function refreshOffsets(id) {
  const fresh = await api(`/groups/${enc(id)}`);
  document.getElementById("offsets-table")?.replaceWith(offsetsTable(fresh));
  const lag = document.getElementById("group-lag");
  if (lag) lag.textContent = fresh.lag;
}

/** Delete the group (only without members): its exact id typed as the confirmation, as a topic or subject. */
function deleteGroupForm(g) {
  const out = h("div", { id: "group-delete-result" });
  const typed = h("input", { id: "group-delete-name", placeholder: g.id });
  const form = h("form", { id: "group-delete-form", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const r = await api(`/groups/${enc(g.id)}`, { method: "DELETE", body: JSON.stringify({ confirm: typed.value }) });
      out.replaceChildren(h("p", { class: "ok", id: "group-delete-ok" }, r.message, " ", h("a", { href: "#/groups" }, "Back to groups")));
    } catch (e) { out.replaceChildren(h("p", { class: "error", id: "group-delete-error", role: "alert" }, e.message)); }
  } }, h("label", {}, `type "${g.id}" to delete`, typed), h("button", { class: "danger", type: "submit", id: "group-delete-submit" }, "Delete group"));
  return h("div", {}, h("h2", {}, "Delete the group and its committed offsets (it must have no members)"), form, out);
}

/** Reset a group's offsets on a topic: always a dry run first, then Execute commits exactly what was shown. */
function resetForm(g) {
  const topics = [...new Set([...g.offsets.map((o) => o.topic), ...g.members.flatMap((m) => m.assignment.map((a) => a.topic))])];
  const topic = h("input", { id: "reset-topic", value: topics[0] || "", placeholder: "topic" });
  const to = h("select", { id: "reset-to" }, h("option", { value: "earliest" }, "earliest"), h("option", { value: "latest" }, "latest"),
    h("option", { value: "offset" }, "offset"), h("option", { value: "timestamp" }, "timestamp"));
  const offset = h("input", { id: "reset-offset", type: "number", min: 0, placeholder: "offset" });
  const stamp = h("input", { id: "reset-timestamp", placeholder: "2026-11-30T10:00:00Z or ms" });
  const out = h("div", { id: "reset-result" });
  // A timestamp as milliseconds, or as a date and time (ISO 8601; without a zone it is the browser's local time).
  const millis = (v) => (/^\d+$/.test(v.trim()) ? Number(v.trim()) : Date.parse(v.trim()));
  const body = (execute) => {
    const b = { topic: topic.value.trim(), to: to.value, execute };
    if (to.value === "offset") b.offset = Number(offset.value);
    if (to.value === "timestamp") {
      const ms = millis(stamp.value);
      if (Number.isNaN(ms)) throw new Error(`"${stamp.value}" is not a timestamp: give milliseconds since 1970 or a date such as 2026-11-30T10:00:00Z`);
      b.timestamp = ms;
    }
    return JSON.stringify(b);
  };
  const show = (r) => table("reset-table", ["topic", "partition#", "current#", "new#"],
    r.offsets.map((o) => h("tr", {}, h("td", {}, o.topic), h("td", { class: "num" }, o.partition), h("td", { class: "num" }, dash(o.current)), h("td", { class: "num" }, o.new))));
  const form = h("form", { id: "reset-form", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const sent = body(true);
      const r = await api(`/groups/${enc(g.id)}/reset-offsets`, { method: "POST", body: body(false) });
      const exec = h("button", { id: "reset-execute", type: "button", class: "danger", onclick: async () => {
        exec.disabled = true;
        try {
          const done = await api(`/groups/${enc(g.id)}/reset-offsets`, { method: "POST", body: sent });
          await refreshOffsets(g.id);
          out.replaceChildren(h("p", { class: "ok", id: "reset-ok" }, `Offsets of ${done.group} reset.`), show(done));
        } catch (e) { out.replaceChildren(h("p", { class: "error", id: "reset-error", role: "alert" }, e.message)); }
      } }, "Execute");
      out.replaceChildren(h("div", { class: "confirm" }, "Dry run: nothing is committed until you execute. ", exec), show(r));
    } catch (e) { out.replaceChildren(h("p", { class: "error", id: "reset-error", role: "alert" }, e.message)); }
  } }, h("label", {}, "topic", topic), h("label", {}, "to", to), h("label", {}, "offset", offset), h("label", {}, "timestamp", stamp), h("button", { id: "reset-dry-run", type: "submit" }, "Dry run"));
  return h("div", {}, h("h2", {}, "Reset offsets (the group must have no active members)"), form, out);
}

// ---- schemas and Connect (services beside the broker) ----

/** The page of a service this process does not run: says so and how to run it, instead of an error. */
function notRunning(e, id, title) {
  view.replaceChildren(h("h1", {}, title),
    h("div", { class: "confirm", id }, h("strong", {}, "Not running. "), e.message));
}

/** A two-step write: the summary with Confirm and Cancel, then the API's answer (ok or error) in `out`. */
function confirmStep(out, idPrefix, summary, run) {
  const yes = h("button", { id: `${idPrefix}-confirm`, type: "button", class: "danger", onclick: async () => {
    yes.disabled = true;
    try {
      const r = await run();
      out.replaceChildren(h("p", { class: "ok", id: `${idPrefix}-ok` }, r.message));
    } catch (e) { out.replaceChildren(h("p", { class: "error", id: `${idPrefix}-error`, role: "alert" }, e.message)); }
  } }, "Confirm");
  out.replaceChildren(h("div", { class: "confirm" }, summary, " ", yes, " ",
    h("button", { type: "button", class: "secondary", onclick: () => out.replaceChildren() }, "Cancel")));
}

/** Register a schema: a compatibility check first (nothing written), then Register after confirmation. */
function registerForm(subjectName) {
  const subject = h("input", { id: "reg-subject", value: subjectName || "", placeholder: "orders-value", required: true });
  const type = h("select", { id: "reg-type" }, ["AVRO", "JSON", "PROTOBUF"].map((t) => h("option", { value: t }, t)));
  const schema = h("textarea", { id: "reg-schema", rows: 8, cols: 80, placeholder: '{"type": "record", "name": "Order", "fields": []}' });
  const out = h("div", { id: "reg-result" });
  const body = (dry) => JSON.stringify({ schema: schema.value, schema_type: type.value, dry_run: dry });
  const form = h("form", { id: "reg-form", onsubmit: async (ev) => {
    ev.preventDefault();
    const s = subject.value.trim();
    try {
      const check = await api(`/schemas/${enc(s)}/versions`, { method: "POST", body: body(true) });
      const msgs = (check.messages || []).map((m) => h("li", {}, typeof m === "string" ? m : JSON.stringify(m)));
      const box = h("div", {});
      confirmStep(box, "reg", `${check.message} Register it under "${s}"?`,
        () => api(`/schemas/${enc(s)}/versions`, { method: "POST", body: body(false) }));
      out.replaceChildren(h("p", { class: check.compatible ? "ok" : "error", id: "reg-check" }, check.message), h("ul", {}, msgs), box);
    } catch (e) { out.replaceChildren(h("p", { class: "error", id: "reg-error", role: "alert" }, e.message)); }
  } }, h("label", {}, "subject", subject), h("label", {}, "type", type), h("label", {}, "schema", schema),
  h("button", { id: "reg-check-button", type: "submit" }, "Check compatibility…"));
  return h("div", {}, h("h2", {}, "Register a schema"), form, out);
}

async function schemas(params) {
  const filter = params.get("filter") || "";
  const offset = Number(params.get("offset") || 0);
  const go = (o, f = filter) => { location.hash = `#/schemas?filter=${enc(f)}&offset=${o}`; };
  let page;
  try { page = await api(`/schemas?filter=${enc(filter)}&offset=${offset}&limit=50`); } catch (e) {
    if (e.notRunning) return notRunning(e, "registry-not-running", "Schemas");
    throw e;
  }
  const rows = page.subjects.map((s) => h("tr", {},
    h("td", {}, h("a", { href: `#/schemas/${enc(s.subject)}` }, s.subject)), h("td", {}, s.schema_type),
    h("td", { class: "num" }, s.versions.length), h("td", { class: "num" }, dash(s.latest_version)), h("td", { class: "num" }, dash(s.latest_id))));
  const input = h("input", { id: "schema-filter", value: filter, placeholder: "filter by subject" });
  view.replaceChildren(
    h("h1", {}, "Schemas"),
    h("p", { class: "muted" }, `Schema registry on ${page.registry} · global compatibility `, h("strong", { id: "global-compat" }, dash(page.compatibility))),
    h("form", { onsubmit: (ev) => { ev.preventDefault(); go(0, input.value); } }, input, h("button", { type: "submit" }, "Filter")),
    pager(page, (o) => go(o)),
    table("subjects-table", ["subject", "type", "versions#", "latest#", "latest id#"], rows),
    registerForm(""));
}

async function subjectPage(name, params) {
  let s;
  try { s = await api(`/schemas/${enc(name)}`); } catch (e) {
    if (e.notRunning) return notRunning(e, "registry-not-running", "Schemas");
    throw e;
  }
  const versions = s.versions;
  const pick = (id, value) => h("select", { id }, versions.map((v) => h("option", { value: v, selected: String(v) === String(value) }, `version ${v}`)));
  const from = pick("diff-from", params.get("from") || versions[Math.max(0, versions.length - 2)]);
  const to = pick("diff-to", params.get("to") || versions[versions.length - 1]);
  const diffOut = h("div", { id: "diff-result" });
  const showDiff = async () => {
    try {
      const d = await api(`/schemas/${enc(name)}/diff?from=${enc(from.value)}&to=${enc(to.value)}`);
      diffOut.replaceChildren(
        h("p", { class: "muted", id: "diff-summary" }, `version ${d.from.version} (id ${d.from.id}) → version ${d.to.version} (id ${d.to.id}): ${d.added} added, ${d.removed} removed`),
        h("pre", { id: "schema-diff", class: "diff" }, d.lines.map((l) => h("div", { class: l.op === "+" ? "diff-add" : l.op === "-" ? "diff-del" : "diff-same" }, `${l.op} ${l.text}`))));
    } catch (e) { diffOut.replaceChildren(errorBox(e)); }
  };
  const level = h("select", { id: "compat-level" }, ["BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE", "NONE"].map(
    (l) => h("option", { value: l, selected: l === s.compatibility }, l)));
  const compatOut = h("div", { id: "compat-result" });
  const compatForm = h("form", { id: "compat-form", onsubmit: (ev) => {
    ev.preventDefault();
    confirmStep(compatOut, "compat", `Set the compatibility of "${name}" to ${level.value}?`,
      () => api(`/schemas/${enc(name)}/compatibility`, { method: "PUT", body: JSON.stringify({ compatibility: level.value }) }));
  } }, h("label", {}, "compatibility level", level), h("button", { type: "submit" }, "Set…"));
  const delOut = h("div", { id: "schema-delete-result" });
  const typed = h("input", { id: "schema-delete-name", placeholder: name });
  const which = h("select", { id: "schema-delete-which" }, h("option", { value: "" }, "the whole subject"), versions.map((v) => h("option", { value: v }, `version ${v}`)));
  const permanent = h("input", { type: "checkbox", id: "schema-delete-permanent" });
  const delForm = h("form", { id: "schema-delete-form", onsubmit: async (ev) => {
    ev.preventDefault();
    const path = which.value ? `/schemas/${enc(name)}/versions/${enc(which.value)}` : `/schemas/${enc(name)}`;
    try {
      const r = await api(path, { method: "DELETE", body: JSON.stringify({ confirm: typed.value, permanent: permanent.checked }) });
      delOut.replaceChildren(h("p", { class: "ok", id: "schema-delete-ok" }, r.message, " ", h("a", { href: "#/schemas" }, "Back to schemas")));
    } catch (e) { delOut.replaceChildren(h("p", { class: "error", id: "schema-delete-error", role: "alert" }, e.message)); }
  } }, h("label", {}, "delete", which), h("label", {}, `type "${name}" to confirm`, typed),
  h("label", {}, h("span", {}, "permanent (after a soft delete)"), permanent), h("button", { class: "danger", type: "submit", id: "schema-delete-submit" }, "Delete"));
  view.replaceChildren(
    h("h1", {}, "Subject ", h("span", { id: "subject-name" }, s.subject)),
    h("div", { class: "cards" },
      card(`compatibility (${s.compatibility_source})`, dash(s.compatibility), "subject-compat"),
      card("versions", versions.length, "subject-versions"),
      card("latest version", dash(s.latest.version), "subject-latest"),
      card("latest schema id", dash(s.latest.id), "subject-latest-id"),
      card("type", s.latest.schema_type, "subject-type")),
    h("h2", {}, `Latest schema (version ${s.latest.version})`),
    h("pre", { id: "schema-latest", class: "schema" }, s.latest.pretty),
    h("h2", {}, "Compare two versions"),
    h("form", { id: "diff-form", onsubmit: (ev) => { ev.preventDefault(); showDiff(); } }, h("label", {}, "from", from), h("label", {}, "to", to),
      h("button", { type: "submit", id: "diff-submit" }, "Compare")),
    diffOut,
    h("h2", {}, "Compatibility"), compatForm, compatOut,
    registerForm(name),
    h("h2", {}, "Delete"), delForm, delOut);
  if (versions.length > 1) await showDiff();
}

async function connectors(params) {
  const filter = params.get("filter") || "";
  const offset = Number(params.get("offset") || 0);
  const go = (o, f = filter) => { location.hash = `#/connect?filter=${enc(f)}&offset=${o}`; };
  let page;
  try { page = await api(`/connect?filter=${enc(filter)}&offset=${offset}&limit=50`); } catch (e) {
    if (e.notRunning) return notRunning(e, "connect-not-running", "Connect");
    throw e;
  }
  const rows = page.connectors.map((c) => h("tr", { class: c.errors ? "has-errors" : null },
    h("td", {}, h("a", { href: `#/connect/${enc(c.name)}` }, c.name)), h("td", {}, dash(c.class)), h("td", {}, dash(c.type)),
    h("td", { class: "connector-state" }, dash(c.state)), h("td", { class: "num" }, `${c.tasks_running}/${c.tasks}`),
    h("td", { class: "num tasks-failed" }, c.tasks_failed)));
  const input = h("input", { id: "connector-filter", value: filter, placeholder: "filter by name" });
  view.replaceChildren(
    h("h1", {}, "Connect"),
    h("p", { class: "muted" }, `Connect worker on ${page.connect}`),
    h("form", { onsubmit: (ev) => { ev.preventDefault(); go(0, input.value); } }, input, h("button", { type: "submit" }, "Filter")),
    pager(page, (o) => go(o)),
    table("connectors-table", ["connector", "class", "type", "state", "tasks running#", "tasks failed#"], rows));
}

async function connectorPage(name) {
  let c;
  try { c = await api(`/connect/${enc(name)}`); } catch (e) {
    if (e.notRunning) return notRunning(e, "connect-not-running", "Connect");
    throw e;
  }
  const out = h("div", { id: "connector-result" });
  const post = (path, body) => api(`/connect/${enc(name)}${path}`, { method: "POST", body: JSON.stringify(body) });
  const includeTasks = h("input", { type: "checkbox", id: "restart-include-tasks", checked: true });
  const onlyFailed = h("input", { type: "checkbox", id: "restart-only-failed" });
  const action = (id, label, summary, run) => h("button", { id, type: "button", class: "secondary", onclick: () => confirmStep(out, "connector", summary(), run) }, label);
  const tasks = (c.task_states || []).map((t) => h("tr", {},
    h("td", { class: "num" }, t.id), h("td", { class: "task-state" }, t.state), h("td", {}, dash(t.worker_id)),
    h("td", { class: "task-trace" }, t.trace ? h("pre", {}, t.trace) : "–"),
    h("td", {}, h("button", { type: "button", class: "secondary task-restart", onclick: () =>
      confirmStep(out, "connector", `Restart task ${t.id} of "${name}"?`, () => post(`/tasks/${t.id}/restart`, {})) }, "Restart task…"))));
  const config = Object.entries(c.config || {}).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, h("pre", {}, String(v)))));
  view.replaceChildren(
    h("h1", {}, "Connector ", h("span", { id: "connector-name" }, name)),
    h("div", { class: "cards" },
      card("state", dash(c.state), "connector-state"), card("type", dash(c.type), "connector-type"),
      card("tasks running", `${c.tasks_running}/${c.tasks}`, "connector-tasks"), card("tasks failed", c.tasks_failed, "connector-failed"),
      card("worker", dash(c.worker_id), "connector-worker")),
    c.connector && c.connector.trace ? h("div", {}, h("h2", {}, "Connector error"), h("pre", { id: "connector-trace", class: "error" }, c.connector.trace)) : "",
    h("h2", {}, "Actions"),
    h("div", { class: "bar" },
      h("label", {}, h("span", {}, "include tasks"), includeTasks), h("label", {}, h("span", {}, "only failed"), onlyFailed),
      action("connector-restart", "Restart…", () => `Restart "${name}"${includeTasks.checked ? (onlyFailed.checked ? " and its failed tasks" : " and its tasks") : ""}?`,
        () => post("/restart", { include_tasks: includeTasks.checked, only_failed: onlyFailed.checked })),
      action("connector-pause", "Pause…", () => `Pause "${name}"? Its tasks stop processing until resumed.`, () => post("/pause", {})),
      action("connector-resume", "Resume…", () => `Resume "${name}"?`, () => post("/resume", {}))),
    out,
    h("h2", {}, "Tasks"),
    table("tasks-table", ["task#", "state", "worker", "error trace", ""], tasks),
    h("h2", {}, "Config"),
    table("connector-config", ["name", "value"], config));
}

// ---- routing ----

async function route() {
  clearTimeout(timer);
  closeLive();
  generation += 1;
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, qs] = hash.split("?");
  const params = new URLSearchParams(qs || "");
  const parts = path.split("/").filter(Boolean).map((p) => {
    try { return decodeURIComponent(p); } catch { return p; }
  });
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", a.dataset.nav === (parts[0] || "overview"));
  }
  try {
    if (parts.length === 0) await overview();
    else if (parts[0] === "topics" && parts.length === 1) await topics(params);
    else if (parts[0] === "topics" && parts.length === 2) await topicPage(parts[1], params);
    else if (parts[0] === "groups" && parts.length === 1) await groups(params);
    else if (parts[0] === "groups" && parts.length === 2) await groupPage(parts[1]);
    else if (parts[0] === "schemas" && parts.length === 1) await schemas(params);
    else if (parts[0] === "schemas" && parts.length === 2) await subjectPage(parts[1], params);
    else if (parts[0] === "connect" && parts.length === 1) await connectors(params);
    else if (parts[0] === "connect" && parts.length === 2) await connectorPage(parts[1]);
    else view.replaceChildren(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Overview")));
  } catch (e) {
    view.replaceChildren(errorBox(e));
  }
  document.body.dataset.loaded = hash;
}

// ---- login ----

// With a login, the header names the user and offers to log out: the server ends the session. A browser keeps
// the basic-auth password it was given and may send it again; the page says so.
async function session() {
  let s;
  try {
    s = await api("/session");
  } catch {
    return;
  }
  const slot = document.getElementById("session");
  if (!s.login) return;
  const out = h("button", {
    type: "button", id: "logout", onclick: async () => {
      out.disabled = true;
      try {
        const r = await api("/logout", { method: "POST" });
        clearTimeout(timer);
        closeLive();
        slot.replaceChildren();
        view.replaceChildren(h("h1", {}, "Logged out"), h("p", { id: "logged-out" }, r.message));
      } catch (e) {
        out.disabled = false;
        view.replaceChildren(errorBox(e));
      }
    },
  }, "Log out");
  slot.replaceChildren(h("span", { class: "muted", id: "user" }, s.user), out);
}

window.addEventListener("hashchange", route);
route();
session();
