// The JSON API (relative URLs: they carry the page's token) and the view's state in the URL hash.

export async function get(name, params = {}) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") query.set(k, v);
  const response = await fetch(`api/${name}?${query}`);
  if (!response.ok) throw new Error(`${name}: ${response.status} ${await response.text()}`);
  return response.json();
}

export const FILTER_KEYS = ["text", "type", "kind", "dir", "rule", "t0", "t1", "stream"];

export function readState() {
  const hash = new URLSearchParams(location.hash.slice(1));
  const state = { conn: hash.has("c") ? Number(hash.get("c")) : null,
                  frame: hash.has("f") ? Number(hash.get("f")) : null,
                  tab: hash.get("tab") || "connections", filter: {} };
  for (const key of FILTER_KEYS) if (hash.get(key)) state.filter[key] = hash.get(key);
  return state;
}

export function writeState(state) {
  const hash = new URLSearchParams();
  if (state.conn !== null) hash.set("c", state.conn);
  if (state.frame !== null) hash.set("f", state.frame);
  if (state.tab !== "connections") hash.set("tab", state.tab);
  for (const key of FILTER_KEYS) if (state.filter[key]) hash.set(key, state.filter[key]);
  history.replaceState(null, "", "#" + hash);
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v);
  }
  for (const child of children.flat()) if (child !== null && child !== undefined) node.append(child);
  return node;
}

export function clock(t) {
  const d = new Date(t * 1000);
  return d.toISOString().slice(11, 23);
}

export function shortId(conn) {
  return conn.length > 12 ? conn.slice(0, 8) + "…" : conn;
}
