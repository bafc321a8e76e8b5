// Building the page's DOM safely. Every text from the store, the API or a user goes in as a
// text node or an attribute value, never as HTML: no file of the page parses a string as
// markup or code (tests/test_page.py checks), so a dataset named "<script>" shows as those
// characters and runs nothing.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(node, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** An HTML element: el("td", {class: "num"}, "12", otherNode). */
export function el(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element, the same way. */
export function svg(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Replace a node's children. */
export function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export const $ = (sel, root = document) => root.querySelector(sel);

export function shortHash(h) {
  return h ? String(h).slice(0, 12) : "";
}

export function num(x, digits = 0) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  return Number(x).toLocaleString("en-US", {minimumFractionDigits: digits, maximumFractionDigits: digits});
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - 60 * m)} s`;
}

/** A name with its short hash beside it, both as text. */
export function named(name, hash) {
  return el("span", {class: "named", title: hash || ""}, el("span", {class: "name"}, name),
    hash ? el("code", {class: "hash"}, shortHash(hash)) : null);
}

/** Run task now and then every ms milliseconds, never two at once, skipping ticks while
 * the tab is hidden; stop() ends it. The task reports its own errors (see page.js). */
export function every(ms, task) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    try {
      if (!document.hidden) await task();
    } finally {
      if (!stopped) timer = setTimeout(tick, ms);
    }
  };
  tick();
  return {stop() { stopped = true; clearTimeout(timer); }};
}
