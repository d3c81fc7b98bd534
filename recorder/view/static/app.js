// mwtap view: connections, a virtual frame list, frame detail with its links, timeline, violations.
import { get, readState, writeState, el, clock, shortId, FILTER_KEYS } from "./api.js";
import { Timeline } from "./timeline.js";

const ROW_H = 22, PAGE = 100, PAGES_KEPT = 60;
// Browsers draw elements millions of pixels down imprecisely (rows overlap at 22M px): past this
// height the scrollbar stands for the list at a scale, and the visible rows sit near scrollTop.
const MAX_HEIGHT = 1_000_000;
const REDACTED = /\[redacted sha256:[0-9a-f]+(?: sub:[0-9a-f]+)?\]/g;
const state = readState();
const pages = new Map();   // page number -> rows (of the current connection and filter)
let total = 0, listKey = "", refreshes = 0, consumers = [], connections = new Map(), lastRecords = -1;

const $ = (id) => document.getElementById(id);
const list = $("list"), spacer = $("spacer"), visible = $("rows");
const timeline = new Timeline($("timeline"), {
  onRange: (t0, t1) => { state.filter.t0 = t0 ?? ""; state.filter.t1 = t1 ?? ""; refreshList(); },
  onFrame: (g) => openFrame(g),
});

function filterParams() {
  const out = {};
  for (const key of FILTER_KEYS) if (state.filter[key]) out[key] = state.filter[key];
  return out;
}

function badges(counts) {
  return ["error", "warning", "info"].filter((s) => counts[s]).map((s) => el("span", { class: `badge ${s}`, title: s }, String(counts[s])));
}

// --- connections -----------------------------------------------------------------------------
async function loadConnections() {
  const answer = await get("consumers");
  consumers = answer.consumers;
  connections = new Map();
  const pane = $("connections");
  pane.replaceChildren();
  for (const group of consumers) {
    const box = el("div", { class: "consumer" },
      el("div", { class: "consumer-head" }, el("span", { class: "who" }, group.consumer), ...badges(group.violations)));
    for (const chain of group.chains) {
      const ol = el("ol", { class: "chain" });
      for (const c of chain) {
        connections.set(c.number, c);
        const close = c.state === "refused" ? `refused ${c.refused_status ?? ""}` :
          c.state === "open" ? "open" : `${c.close_code ?? "?"} by ${c.closed_by ?? "?"}`;
        ol.append(el("li", { class: "conn" + (c.number === state.conn ? " on" : ""), "data-conn": c.number,
                             onclick: () => selectConnection(c.number) },
          el("span", { class: "cid", title: c.conn }, shortId(c.conn)), ...badges(c.violations),
          el("span", { class: "meta" }, `${clock(c.t_open)} · ${c.duration_s === null ? "…" : c.duration_s.toFixed(1) + " s"} · ${c.frames} frames · ${close}`)));
      }
      box.append(ol);
    }
    if (group.more) box.append(el("div", { class: "more" }, `… ${group.more} more connections`));
    pane.append(box);
  }
  if (answer.more) pane.append(el("div", { class: "more" }, `… ${answer.more} more consumers with fewer findings`));
}

function markConnection() {
  for (const li of document.querySelectorAll("li.conn")) li.classList.toggle("on", Number(li.dataset.conn) === state.conn);
  const c = connections.get(state.conn);
  $("conn-title").replaceChildren(c ? el("span", {}, el("b", {}, shortId(c.conn)), ` ${c.url ?? ""} · client ${c.client ?? "?"}`,
    c.prev !== null ? el("a", { href: "#", onclick: (e) => { e.preventDefault(); selectConnection(c.prev); } }, " ← reconnect of") : null,
    c.next !== null ? el("a", { href: "#", onclick: (e) => { e.preventDefault(); selectConnection(c.next); } }, " reconnected as →") : null) : "");
}

async function selectConnection(number, frame = null) {
  state.conn = number;
  state.frame = frame;
  state.filter.t0 = state.filter.t1 = "";
  state.filter.stream = "";
  markConnection();
  await refreshList();
  if (frame !== null) await openFrame(frame);
}

// --- the virtual list ----------------------------------------------------------------------------
async function refreshList() {
  writeState(state);
  syncForm();
  pages.clear();
  listKey = JSON.stringify([state.conn, filterParams()]);
  const refresh = ++refreshes;
  if (state.conn === null) return;
  const first = await get("frames", { conn: state.conn, start: 0, count: PAGE, ...filterParams() });
  // A later refresh asked meanwhile draws its list (even the same one: when following, it is newer).
  if (refresh !== refreshes) return;
  pages.set(0, first.rows);
  total = first.total;
  spacer.style.height = `${Math.min(total * ROW_H, MAX_HEIGHT)}px`;
  drawTimeline(refresh);
  await renderRows();
  if (refresh !== refreshes) return;
  // after the rows: the footer names the list that is drawn
  $("list-foot").textContent = `${total.toLocaleString()} frames` + (Object.keys(filterParams()).length ? " (filtered)" : "");
}

async function drawTimeline(refresh) {
  const buckets = Math.max(50, Math.floor($("timeline").clientWidth / 3));
  const answer = await get("timeline", { conn: state.conn, t0: state.filter.t0, t1: state.filter.t1, buckets });
  if (refresh === refreshes) timeline.show(answer);  // as the list: a later refresh draws its own
}

async function page(number) {
  if (pages.has(number)) return pages.get(number);
  const key = listKey;
  const answer = await get("frames", { conn: state.conn, start: number * PAGE, count: PAGE, ...filterParams() });
  if (key !== listKey) return null;  // the list changed meanwhile
  pages.set(number, answer.rows);
  if (pages.size > PAGES_KEPT) pages.delete(pages.keys().next().value);
  return answer.rows;
}

function scale() {  // list pixels per scrollbar pixel
  const real = total * ROW_H, shown = Math.min(real, MAX_HEIGHT), view = list.clientHeight;
  return real > shown && shown > view ? (real - view) / (shown - view) : 1;
}

// One render at a time; one asked for meanwhile (a new filter, a scroll) runs after it, or stale rows
// would stay. Every caller gets the promise of the renders that include what it asked for.
let rendering = null, renderAgain = false;
function renderRows() {
  if (rendering) { renderAgain = true; return rendering; }
  rendering = (async () => {
    try {
      do {
        renderAgain = false;
        await drawRows();
      } while (renderAgain);
    } finally {
      rendering = null;
    }
  })();
  return rendering;
}

async function drawRows() {
  const top = list.scrollTop * scale(), first = Math.floor(top / ROW_H), count = Math.ceil(list.clientHeight / ROW_H) + 2;
  const last = Math.min(total, first + count);
  const wanted = new Set();
  for (let i = first; i < last; i++) wanted.add(Math.floor(i / PAGE));
  const loaded = new Map();
  for (const p of wanted) loaded.set(p, await page(p));
  const rows = [];
  for (let i = first; i < last; i++) {
    const r = (loaded.get(Math.floor(i / PAGE)) || [])[i % PAGE];
    if (r) rows.push(rowNode(r));
  }
  // One offset for the visible block: at a million rows a top per row would be rounded apart.
  visible.style.top = `${list.scrollTop - (top - first * ROW_H)}px`;  // CSSOM: the policy forbids style attributes
  visible.dataset.first = first;
  visible.replaceChildren(...rows);
}

function rowNode(r) {
  const id = r.kind === "resp" ? r.reqId : r.id;
  return el("div", { class: `row ${r.dir} k-${r.kind}` + (r.g === state.frame ? " on" : "") + (r.severity ? ` sev-${r.severity}` : ""),
                           "data-g": r.g, onclick: () => openFrame(r.g) },
    el("span", {}, clock(r.t)), el("span", {}, r.dir === "c2s" ? "→" : r.dir === "s2c" ? "←" : ""),
    el("span", {}, r.kind), el("span", { title: r.type ?? "" }, r.type ?? ""), el("span", {}, id ?? ""),
    el("span", {}, r.latency_ms === null ? "" : `${r.latency_ms.toFixed(1)} ms`), el("span", {}, String(r.size)),
    el("span", { class: "preview" }, r.preview));
}

list.addEventListener("scroll", () => requestAnimationFrame(renderRows));

// --- one frame --------------------------------------------------------------------------------
async function openFrame(g, reveal = true) {  // reveal: clear a filter that hides the frame
  const f = await get("frame", { g });
  if (f.connection !== state.conn) {
    state.conn = f.connection;
    state.filter = {};
    markConnection();
    await refreshList();
  }
  let at = (await get("position", { conn: state.conn, g, ...filterParams() })).position;
  if (at === null && reveal) {  // filtered out: show it unfiltered
    state.filter = {};
    await refreshList();
    at = (await get("position", { conn: state.conn, g })).position;
  }
  state.frame = g;
  selectedAt = at;
  writeState(state);
  const top = list.scrollTop * scale();
  if (at !== null && (at * ROW_H < top || (at + 1) * ROW_H > top + list.clientHeight)) {
    list.scrollTop = Math.max(0, at * ROW_H - list.clientHeight / 3) / scale();
  }
  await renderRows();
  showDetail(f);
}

// ↑ / ↓ (or k / j) open the previous / next frame of the list.
let selectedAt = null;
document.addEventListener("keydown", async (e) => {
  const step = { ArrowDown: 1, j: 1, ArrowUp: -1, k: -1 }[e.key];
  if (!step || selectedAt === null || e.target.closest("input, select, textarea")) return;
  e.preventDefault();
  const at = selectedAt + step;
  if (at < 0 || at >= total) return;
  const rows = await page(Math.floor(at / PAGE));
  if (rows && rows[at % PAGE]) await openFrame(rows[at % PAGE].g);
});

function jump(label, g, extra = "") {
  return el("button", { class: "jump", onclick: () => openFrame(g) }, label, extra);
}

function showDetail(f) {
  const links = [];
  if (f.peer !== null) {
    const label = f.kind === "resp" ? "← request" : "response →";
    links.push(jump(label, f.peer, ` (${f.latency_ms.toFixed(1)} ms)`));
  }
  if (f.stream_info) {
    links.push(el("button", { class: "jump", onclick: () => { state.filter = { stream: String(f.stream_info.number) }; refreshList(); } },
      `stream ${f.stream_info.key === "sub" ? "subscription" : "dialog"} ${shortId(f.stream_info.id)}: ${f.stream_info.frames} frames`));
  }
  for (const [name, label] of [["accept", "ACCEPT →"], ["read", "READ →"], ["message", "← message"]]) {
    if (f.links[name] !== undefined) links.push(jump(label, f.links[name]));
  }
  if (f.links.reconnect) links.push(el("button", { class: "jump", onclick: () => selectConnection(f.links.reconnect.connection) },
    `reconnect → (${f.links.reconnect.linked_by ?? "linked"})`));
  if (f.links.reconnect_of) links.push(el("button", { class: "jump", onclick: () => selectConnection(f.links.reconnect_of.connection) }, "← connection before"));
  const violations = f.violations.map((v) => el("div", { class: `violation ${v.severity}` },
    el("b", {}, `${v.severity} ${v.rule}`), ": ", v.message));
  $("detail").replaceChildren(
    el("h3", {}, `${f.kind} ${f.type ?? ""}`),
    el("div", { class: "facts" }, `${clock(f.t)} · ${f.dir} · frame ${f.n ?? "–"} · ${f.size} bytes`),
    el("div", { class: "links" }, ...links), ...violations,
    el("pre", { class: "json" }, ...highlight(f.payload ?? JSON.stringify(f.record, null, 2))),
    f.payload === null ? null : el("details", {}, el("summary", {}, "record fields"),
                                   el("pre", {}, ...highlight(JSON.stringify(f.record, null, 2)))),
    el("div", { class: "facts" }, f.file));
}

function highlight(text) {  // redaction markers shown as such; everything else as plain text
  const parts = [];
  let last = 0;
  for (const m of text.matchAll(REDACTED)) {
    parts.push(text.slice(last, m.index), el("mark", { class: "redacted", title: "redacted by the recorder" }, m[0]));
    last = m.index + m[0].length;
  }
  parts.push(text.slice(last));
  return parts;
}

// --- violations ---------------------------------------------------------------------------------
// " (and 2 more as warning, 1 more as info)" for a group's findings below its severity, as `mwtap analyze` says it
function lower(counts) {
  const more = Object.entries(counts).map(([severity, n]) => `${n} more as ${severity}`).join(", ");
  return more ? ` (and ${more})` : "";
}

async function loadViolations() {
  const groups = await get("violations");
  const pane = $("violations");
  pane.replaceChildren();
  const rules = new Set();
  for (const group of groups) {
    const box = el("div", { class: "consumer" }, el("div", { class: "consumer-head" }, el("span", { class: "who" }, group.consumer)));
    for (const r of group.rules) {
      rules.add(r.rule);
      box.append(el("details", { class: `rule ${r.severity}` },
        el("summary", {}, el("span", { class: `badge ${r.severity}` }, r.severity), ` ${r.rule} × ${r.count}`,
           r.connections > 1 ? ` (${r.connections} connections)` : "",
           lower(r.lower)),
        el("p", { class: "explain" }, r.explanation ?? ""),
        el("ul", {}, ...r.items.map((v) => el("li", { class: "vitem", onclick: () => v.g !== null ? openFrame(v.g) : selectConnection(v.connection) },
          `${clock(v.t)} ${v.message}`)))));
    }
    pane.append(box);
  }
  const select = document.querySelector("select[name=rule]");
  for (const rule of [...rules].sort()) if (![...select.options].some((o) => o.value === rule)) select.append(el("option", { value: rule }, rule));
  syncForm();
}

// --- filters, tabs, following -----------------------------------------------------------------------
const form = $("filters");
function syncForm() {
  for (const key of ["text", "type", "kind", "dir", "rule"]) form.elements[key].value = state.filter[key] ?? "";
  const t0 = state.filter.t0, t1 = state.filter.t1;
  $("range").textContent = t0 || t1 ? `${t0 ? clock(Number(t0)) : "…"} – ${t1 ? clock(Number(t1)) : "…"}` : "";
  $("range").hidden = !(t0 || t1);
}
form.addEventListener("submit", (e) => { e.preventDefault(); readForm(); });
form.addEventListener("change", readForm);
function readForm() {
  for (const key of ["text", "type", "kind", "dir", "rule"]) state.filter[key] = form.elements[key].value;
  refreshList();
}
$("clear").addEventListener("click", () => { state.filter = {}; refreshList(); });

function showTab(tab) {
  state.tab = tab;
  for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("on", b.dataset.tab === tab);
  $("connections").hidden = tab !== "connections";
  $("violations").hidden = tab !== "violations";
  writeState(state);
}
for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));

async function poll() {
  const s = await get("summary");
  $("summary").textContent = `${s.files.join(", ")} · ${s.connections} connections · ${s.records.toLocaleString()} records · `
    + `${s.violations.error} errors, ${s.violations.warning} warnings, ${s.violations.info} info`;
  $("follow").hidden = !s.following;
  if (s.records !== lastRecords) {
    const first = lastRecords < 0;
    lastRecords = s.records;
    if (!first) {
      await loadConnections();
      await loadViolations();
      markConnection();
      if (state.conn !== null) await refreshList();
    }
  }
  if (s.following) setTimeout(poll, 500);
}

async function start() {
  await poll();
  await loadConnections();
  await loadViolations();
  showTab(state.tab);
  if (state.conn === null && consumers.length) state.conn = consumers[0].chains[0][0].number;
  markConnection();
  await refreshList();
  if (state.frame !== null) await openFrame(state.frame, false);  // the link's filter stays
  document.body.dataset.ready = "1";
}
start();
