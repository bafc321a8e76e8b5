// The service panel: the model's fingerprint and the numbers of /metrics (GET /v1/stats).

import {api} from "./api.js";
import {$, el, fill, num, shortHash} from "./dom.js";

function stat(label, value, id, title) {
  return el("div", {class: "stat", id, title}, el("dt", {}, label), el("dd", {}, value));
}

/** The model line (GET /v1/info), once per page load. */
export async function loadInfo() {
  const info = await api("/v1/info");
  fill($("#model"), el("span", {class: "name"}, info.model), " ", el("code", {class: "hash"}, shortHash(info.model_hash)));
  fill($("#fingerprint"),
    stat("model", info.model, "stat-model", info.source),
    stat("fingerprint", info.model_hash, "stat-hash"),
    stat("dim · dtype", `${info.dim} · ${info.dtype}`),
    stat("pooling · layers", `${info.pooling} · ${info.layers.join(", ")}`),
    stat("max length", `${info.max_length} (${info.truncation_side})`),
    stat("input format", info.input_format),
    stat("embrm", info.embrm_version));
}

/** The counters (GET /v1/stats), polled. */
export async function refreshStats() {
  const s = await api("/v1/stats");
  const seen = s.hits + s.misses;
  const queue = Object.entries(s.queue || {}).map(([k, v]) => `${k} ${num(v)}`).join(" · ") || "0";
  fill($("#stats"),
    stat("cache hits", num(s.hits), "stat-hits"),
    stat("misses", num(s.misses), "stat-misses"),
    stat("hit rate", seen ? `${((100 * s.hits) / seen).toFixed(1)} %` : "–", "stat-rate"),
    stat("items per forward call", num(s.items_per_call, 1), "stat-batch"),
    stat("queue (items)", queue, "stat-queue"),
    stat("forward tokens/s", num(s.tokens_per_second), "stat-tps"),
    stat("vectors committed", num(s.committed), "stat-committed"),
    stat("requests", num(s.requests), "stat-requests"),
    stat("jobs running", num(s.jobs_running), "stat-jobs"));
}
