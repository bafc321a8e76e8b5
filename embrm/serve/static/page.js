// The page's entry point: ask for the token when the service wants one, then fill and poll
// the sections. A refused token (401 from any call) stops everything, clears every piece of
// data from the screen and asks again: nothing is shown, or kept, without a valid token.

import {api, authRequired, onRefused, token} from "./api.js";
import {$, every, fill} from "./dom.js";
import {refreshJobs} from "./jobs.js";
import {setRuns, setupPlayground} from "./playground.js";
import {refreshRms, setupRms} from "./rms.js";
import {loadInfo, refreshStats} from "./service.js";
import {refreshStore, setupStore} from "./store.js";

const DATA = ["#model", "#fingerprint", "#stats", "#jobs-body", "#entries-body", "#store-count", "#rms-body",
  "#charts", "#play-body", "#play-status", "#play-rm"];
let pollers = [];

/** A section's refresh that shows its own error (and clears it once it works again). */
function task(section, fn) {
  return async () => {
    try {
      await fn();
      fill($(`#${section}-error`));
    } catch (e) {
      if (e.status !== 401) fill($(`#${section}-error`), e.message);
    }
  };
}

function start() {
  $("#login").hidden = true;
  $("#main").hidden = false;
  $("#logout").hidden = !authRequired;
  task("service", loadInfo)();
  pollers = [
    every(2000, task("service", refreshStats)),
    every(1000, task("jobs", refreshJobs)),
    every(5000, task("store", refreshStore)),
    every(15000, task("rms", async () => setRuns(await refreshRms()))),
  ];
}

function stop(message) {
  pollers.forEach((p) => p.stop());
  pollers = [];
  DATA.forEach((sel) => fill($(sel)));
  $("#main").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  fill($("#login-error"), message);
  $("#token").focus();
}

onRefused(() => stop("The service refused that token; enter a valid one."));

$("#login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  token.set($("#token").value.trim());
  $("#token").value = "";
  try {
    await api("/v1/info");
    start();
  } catch (e) {
    if (e.status !== 401) fill($("#login-error"), e.message);
  }
});
$("#logout").addEventListener("click", () => {
  token.clear();
  stop("");
});
$("#refresh-rms").addEventListener("click", task("rms", async () => setRuns(await refreshRms())));
setupStore(task("store", refreshStore));
setupRms();
setupPlayground();
if (!authRequired || token.get()) start();
else stop("");
