// Line charts as inline SVG, built with DOM calls (no library, no HTML strings). One chart
// takes any number of series, so selected reward models overlay on the same axes.

import {el, svg} from "./dom.js";

const W = 460;
const H = 290;
const M = {left: 52, right: 14, top: 12, bottom: 42};

function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toFixed(10)));
  return out;
}

function label(v) {
  return Math.abs(v) >= 100 || Number.isInteger(v) ? String(v) : v.toFixed(2);
}

/**
 * series: [{id, label, color (0-7), points: [[x, y], ...], kind: "line" | "dash" | "dot"}]
 * x: {label, log, ticks?, min?, max?}; y: {label, min?, max?}; diagonal: draw y = x;
 * legend: [{label, cls}] (cls: a colour class c0-c7 or "muted", and "dash" or "dot").
 * Returns a <figure> holding the SVG and a legend (names as text).
 */
export function lineChart({title, x, y, series, diagonal = false, legend = []}) {
  const pts = series.flatMap((s) => s.points).filter(([a, b]) => Number.isFinite(a) && Number.isFinite(b));
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => p[1]);
  let x0 = x.min ?? Math.min(...xs);
  let x1 = x.max ?? Math.max(...xs);
  let y0 = y.min ?? Math.min(...ys);
  let y1 = y.max ?? Math.max(...ys);
  if (!pts.length) [x0, x1, y0, y1] = [0, 1, 0, 1];
  if (y1 === y0) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  if (y.min === undefined && y.max === undefined) {
    const pad = (y1 - y0) * 0.06;
    [y0, y1] = [y0 - pad, y1 + pad];
  }
  const fx = x.log ? Math.log : (v) => v;
  const [fx0, fx1] = [fx(x0), fx(x1) === fx(x0) ? fx(x0) + 1 : fx(x1)];
  const sx = (v) => M.left + ((fx(v) - fx0) / (fx1 - fx0)) * (W - M.left - M.right);
  const sy = (v) => H - M.bottom - ((v - y0) / (y1 - y0)) * (H - M.top - M.bottom);

  const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title});
  const grid = svg("g", {class: "grid"});
  const xt = x.ticks ?? (x.log ? [...new Set(xs)].sort((a, b) => a - b) : niceTicks(x0, x1));
  for (const t of xt) {
    grid.append(svg("line", {x1: sx(t), x2: sx(t), y1: M.top, y2: H - M.bottom}),
      svg("text", {x: sx(t), y: H - M.bottom + 15, class: "tick x"}, label(t)));
  }
  for (const t of niceTicks(y0, y1)) {
    grid.append(svg("line", {x1: M.left, x2: W - M.right, y1: sy(t), y2: sy(t)}),
      svg("text", {x: M.left - 6, y: sy(t) + 4, class: "tick y"}, label(t)));
  }
  root.append(grid,
    svg("line", {class: "axis", x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom}),
    svg("line", {class: "axis", x1: M.left, x2: M.left, y1: M.top, y2: H - M.bottom}),
    svg("text", {class: "axis-label", x: (M.left + W - M.right) / 2, y: H - 6}, x.label),
    svg("text", {class: "axis-label", x: -(M.top + H - M.bottom) / 2, y: 14, transform: "rotate(-90)"}, y.label));
  if (diagonal) {
    root.append(svg("line", {class: "diagonal", x1: sx(Math.max(x0, y0)), y1: sy(Math.max(x0, y0)),
      x2: sx(Math.min(x1, y1)), y2: sy(Math.min(x1, y1))}));
  }
  for (const s of series) {
    const ok = s.points.filter(([a, b]) => Number.isFinite(a) && Number.isFinite(b));
    if (!ok.length) continue;
    const d = ok.map(([a, b], i) => `${i ? "L" : "M"}${sx(a).toFixed(1)},${sy(b).toFixed(1)}`).join("");
    const g = svg("g", {class: `series c${s.color % 8} ${s.kind || "line"}`, "data-series": s.id,
      "data-rm": s.rm ?? ""});
    g.append(svg("path", {d}));
    if ((s.kind || "line") === "line") {
      for (const [a, b] of ok) {
        g.append(svg("circle", {cx: sx(a).toFixed(1), cy: sy(b).toFixed(1), r: 3, "data-x": a, "data-y": b},
          svg("title", {}, `${s.label}: ${label(a)}, ${b.toFixed(3)}`)));
      }
    }
    root.append(g);
  }
  const items = legend.map((l) => el("li", {class: l.cls},
    el("span", {class: "swatch"}), l.label));
  return el("figure", {class: "chart-box"}, el("figcaption", {}, title), root, el("ul", {class: "legend"}, items));
}
