// Reward models (GET /v1/rms) and their validation curves, drawn from each run's metrics.json
// as the service lists it: Best-of-N (gold reward of the pick against N, with the oracle and
// a random pick) and calibration (the reliability diagram's bins). Ticking models overlays them.

import {api} from "./api.js";
import {$, el, fill, named, num, shortHash} from "./dom.js";
import {lineChart} from "./charts.js";

const chosen = new Set();
let runs = [];
let defaulted = false;  // the first model is ticked once; after that the user's choice stands

function aggregationOf(r) {
  const aggs = (r.metrics && r.metrics.aggregations) || {};
  return aggs[$("#bon-agg").value] || aggs.mean || Object.values(aggs)[0] || {};
}

/** The table's numbers for the chosen aggregation: BoN at the largest N, pair accuracy, ECE
 * (null where a metric is undefined, as metrics.json's NaN arrives). */
function summary(r) {
  const m = r.metrics || {};
  const a = aggregationOf(r);
  const bon = a.bon && a.bon.length && m.N ? `${num(a.bon.at(-1), 3)} @${m.N.at(-1)}` : "–";
  return [bon, num(a.pairwise_accuracy, 3), num(a.ece ?? (m.calibration && m.calibration.ece), 3)];
}

function row(r, i) {
  const box = el("input", {type: "checkbox", "aria-label": `overlay ${r.name}`, "data-rm": r.name});
  box.checked = chosen.has(r.name);
  box.addEventListener("change", () => {
    if (box.checked) chosen.add(r.name);
    else chosen.delete(r.name);
    draw();
  });
  const [bon, acc, ece] = summary(r);
  return el("tr", {class: "rm", "data-rm": r.name},
    el("td", {}, box, el("span", {class: `swatch c${i % 8}`})),
    el("td", {class: "name"}, r.name),
    el("td", {}, `${r.method} × ${r.members}`),
    el("td", {}, named(r.dataset_name || "?", r.dataset_hash)),
    el("td", {}, el("span", {title: r.model_name || ""}, `${shortHash(r.model_hash)} L${r.layer} · ${r.dim}`)),
    el("td", {}, r.source === "dir" ? "--rm" : "store"),
    el("td", {class: "num"}, bon),
    el("td", {class: "num"}, acc),
    el("td", {class: "num"}, ece),
    el("td", {}, r.servable ? el("span", {class: "badge complete"}, "served")
      : el("span", {class: "badge failed", title: r.problem || ""}, "not servable")));
}

function draw() {
  const picked = runs.map((r, i) => [r, i]).filter(([r]) => chosen.has(r.name));
  const bon = [];
  const cal = [];
  const legend = [];
  for (const [r, i] of picked) {
    const m = r.metrics || {};
    legend.push({label: r.name, cls: `c${i % 8}`});
    const a = aggregationOf(r);
    if (m.N && a.bon) {
      bon.push({id: `${r.name}:bon`, rm: r.name, label: r.name, color: i, points: m.N.map((n, k) => [n, a.bon[k]])});
      if (m.oracle) {
        bon.push({id: `${r.name}:oracle`, rm: r.name, label: `${r.name} oracle`, color: i, kind: "dash",
          points: m.N.map((n, k) => [n, m.oracle[k]])});
      }
      if (m.random != null) {
        bon.push({id: `${r.name}:random`, rm: r.name, label: `${r.name} random`, color: i, kind: "dot",
          points: [[m.N[0], m.random], [m.N[m.N.length - 1], m.random]]});
      }
    }
    const c = m.calibration;
    if (c && c.confidence) {
      const pts = c.confidence.map((x, k) => [x, c.frequency[k], c.count[k]]).filter((p) => p[2] > 0);
      cal.push({id: `${r.name}:calibration`, rm: r.name, label: r.name, color: i, points: pts.map((p) => [p[0], p[1]])});
    }
  }
  const agg = $("#bon-agg").value;
  fill($("#charts"),
    lineChart({title: `Best-of-N (${agg}): gold reward of the pick`, x: {label: "N (log scale)", log: true},
      y: {label: "gold reward"}, series: bon,
      legend: [...legend, {label: "oracle", cls: "muted dash"}, {label: "random pick", cls: "muted dot"}]}),
    lineChart({title: "Calibration (mean): P(a beats b) against how often it did",
      x: {label: "confidence", min: 0, max: 1}, y: {label: "frequency", min: 0, max: 1}, series: cal,
      diagonal: true, legend}));
  $("#charts-empty").hidden = picked.length > 0;
}

/** Load the list (and redraw); returns the runs, for the playground's choice of model. */
export async function refreshRms() {
  runs = (await api("/v1/rms")).data;
  const names = new Set(runs.map((r) => r.name));
  for (const n of [...chosen]) if (!names.has(n)) chosen.delete(n);
  if (!defaulted && runs.length) {
    chosen.add(runs[0].name);
    defaulted = true;
  }
  fill($("#rms-body"), runs.map(row));
  $("#rms-empty").hidden = runs.length > 0;
  draw();
  return runs;
}

export function setupRms() {
  $("#bon-agg").addEventListener("change", () => {
    fill($("#rms-body"), runs.map(row));
    draw();
  });
}
