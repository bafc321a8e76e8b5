// The reward playground: a prompt and candidate responses scored by POST /v1/rewards (the
// route RLHF and Best-of-N frameworks call), each reward with the ensemble's spread, and the
// response Best-of-N would pick (the highest aggregated reward; the first of equals).

import {api} from "./api.js";
import {$, el, fill, svg} from "./dom.js";

const COEF = {"mean-var": "lambda", "mean-std": "beta"};
const STARTERS = ["Sure! Here is a clear, step-by-step answer.", "I don't know.", "No."];

function responseBox(text) {
  const area = el("textarea", {class: "response", rows: 2, "aria-label": "response"});
  area.value = text;
  const remove = el("button", {type: "button", class: "remove", title: "remove this response"}, "×");
  const box = el("div", {class: "response-box"}, area, remove);
  remove.addEventListener("click", () => {
    if (document.querySelectorAll("#play-responses .response-box").length > 1) box.remove();
  });
  return box;
}

/** The servable reward models as the choices (keeping the current one when it remains). */
export function setRuns(runs) {
  const select = $("#play-rm");
  const was = select.value;
  const servable = runs.filter((r) => r.servable);
  fill(select, servable.map((r) => el("option", {value: r.name}, `${r.name} (${r.method} × ${r.members})`)));
  if (servable.some((r) => r.name === was)) select.value = was;
  $("#play-score").disabled = servable.length === 0;
}

function bar(reward, std, lo, hi) {
  const W = 160;
  const x = (v) => 4 + ((v - lo) / (hi - lo || 1)) * (W - 8);
  return svg("svg", {viewBox: `0 0 ${W} 16`, class: "spread", "aria-hidden": "true"},
    svg("line", {class: "zero", x1: x(Math.min(Math.max(0, lo), hi)), x2: x(Math.min(Math.max(0, lo), hi)), y1: 1, y2: 15}),
    svg("line", {class: "std", x1: x(reward - std), x2: x(reward + std), y1: 8, y2: 8}),
    svg("circle", {cx: x(reward), cy: 8, r: 4}));
}

function show(out, responses) {
  const data = out.data;
  let best = 0;
  data.forEach((d, i) => { if (d.reward > data[best].reward) best = i; });
  const lo = Math.min(...data.map((d) => d.reward - d.std));
  const hi = Math.max(...data.map((d) => d.reward + d.std));
  fill($("#play-body"), data.map((d, i) => el("tr", {class: i === best ? "scored best" : "scored",
    "data-index": i, "data-reward": d.reward, "data-std": d.std},
  el("td", {class: "num"}, String(i + 1)),
  el("td", {class: "response-text"}, responses[i]),
  el("td", {class: "num reward"}, d.reward.toFixed(4)),
  el("td", {class: "num std"}, `± ${d.std.toFixed(4)}`),
  el("td", {}, bar(d.reward, d.std, lo, hi)),
  el("td", {}, i === best ? el("span", {class: "badge pick"}, "Best-of-N pick") : null))));
  fill($("#play-status"), `${out.rm} · ${out.aggregation} · Best-of-${data.length} picks response ${best + 1} · `,
    `${out.usage.prompt_tokens} tokens, ${data.filter((d) => d.cached).length} of ${data.length} cached`);
}

export function setupPlayground() {
  fill($("#play-responses"), STARTERS.map(responseBox));
  $("#play-prompt").value = "How do I boil an egg?";
  $("#play-add").addEventListener("click", () => $("#play-responses").append(responseBox("")));
  $("#play-agg").addEventListener("change", () => {
    const name = COEF[$("#play-agg").value];
    $("#play-coef-box").hidden = !name;
    if (name) fill($("#play-coef-name"), name);
  });
  $("#play").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const prompt = $("#play-prompt").value;
    const responses = [...document.querySelectorAll("#play-responses textarea")].map((t) => t.value);
    const aggregation = $("#play-agg").value;
    const body = {rm: $("#play-rm").value, aggregation, items: responses.map((response) => ({prompt, response}))};
    if (COEF[aggregation]) body[COEF[aggregation]] = Number($("#play-coef").value);
    fill($("#play-status"), "scoring…");
    $("#play-score").disabled = true;
    try {
      show(await api("/v1/rewards", {method: "POST", body}), responses);
    } catch (e) {
      fill($("#play-body"));
      fill($("#play-status"), el("span", {class: "error"}, e.message));
    } finally {
      $("#play-score").disabled = false;
    }
  });
}
