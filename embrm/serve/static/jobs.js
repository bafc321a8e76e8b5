// Dataset jobs (GET /v1/jobs): running ones first, with live progress, polled every second.

import {api} from "./api.js";
import {$, el, fill, named, num, seconds} from "./dom.js";

function row(j) {
  const pct = j.rows ? (100 * j.done_rows) / j.rows : 100;
  return el("tr", {class: `job ${j.status}`, "data-dataset": j.dataset_hash},
    el("td", {}, named(j.dataset_name, j.dataset_hash)),
    el("td", {}, el("span", {class: `badge ${j.status}`}, j.status),
      j.error ? el("div", {class: "error"}, j.error) : null),
    el("td", {class: "progress-cell"},
      el("progress", {max: Math.max(j.rows, 1), value: j.done_rows}),
      el("span", {class: "rows-done"}, `${num(j.done_rows)} / ${num(j.rows)} rows`),
      el("span", {class: "pct"}, ` (${pct.toFixed(0)} %)`)),
    el("td", {class: "num tps"}, num(j.tokens_per_second)),
    el("td", {class: "num"}, num(j.computed)),
    el("td", {class: "num"}, num(j.cached)),
    el("td", {class: "num", title: j.started_at}, `${j.started_at.slice(11, 19)} UTC`),
    el("td", {class: "num"}, seconds(j.seconds)));
}

export async function refreshJobs() {
  const jobs = (await api("/v1/jobs")).data;
  fill($("#jobs-body"), jobs.map(row));
  $("#jobs-empty").hidden = jobs.length > 0;
}
