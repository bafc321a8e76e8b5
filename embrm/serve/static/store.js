// The store's catalog, one page at a time (GET /v1/entries?offset&limit&q&sort&order): the
// service filters and sorts, so thousands of entries cost the browser one page of rows.

import {api, query} from "./api.js";
import {$, el, fill, named, num, bytes} from "./dom.js";

const state = {offset: 0, limit: 50, q: "", sort: "", order: "asc", total: 0};

function row(e) {
  const rows = e.status === "complete" ? num(e.rows) : `${num(e.rows)} / ${num(e.n_rows)}`;
  return el("tr", {class: "entry", "data-entry": `${e.model_hash}/${e.dataset_hash}`},
    el("td", {}, named(e.model, e.model_hash)),
    el("td", {class: "dataset"}, named(e.dataset, e.dataset_hash)),
    el("td", {}, e.kind),
    el("td", {class: "num rows"}, rows),
    el("td", {class: "num"}, num(e.dim)),
    el("td", {}, e.dtype),
    el("td", {}, el("span", {class: `badge ${e.status}`}, e.status)),
    el("td", {class: "num"}, num(e.truncated)),
    el("td", {class: "num", title: `${num(e.vector_bytes)} bytes of vectors`}, bytes(e.vector_bytes)));
}

let asked = 0;  // answers to older requests (a filter typed since) are dropped

export async function refreshStore() {
  const mine = ++asked;
  const page = await api(`/v1/entries${query({offset: state.offset, limit: state.limit, q: state.q,
    sort: state.sort, order: state.order})}`);
  if (mine !== asked) return;
  state.total = page.total;
  if (state.offset >= page.total && page.total > 0) {  // the catalog shrank under this page
    state.offset = Math.max(0, Math.floor((page.total - 1) / state.limit) * state.limit);
    return refreshStore();
  }
  fill($("#entries-body"), page.data.map(row));
  const first = page.total ? state.offset + 1 : 0;
  fill($("#store-count"), `${num(first)}–${num(state.offset + page.data.length)} of ${num(page.total)} entries`);
  $("#prev").disabled = state.offset === 0;
  $("#next").disabled = state.offset + state.limit >= page.total;
  $("#store-empty").hidden = page.total > 0;
}

/** Wire the filter, the sortable headers and the pager; go refreshes (and shows errors). */
export function setupStore(go) {
  let typing = null;
  $("#filter").addEventListener("input", (ev) => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      state.q = ev.target.value;
      state.offset = 0;
      go();
    }, 200);
  });
  for (const th of document.querySelectorAll("#entries th[data-sort]")) {
    const button = el("button", {type: "button", class: "sort"}, th.textContent);
    fill(th, button);
    button.addEventListener("click", () => {
      const key = th.dataset.sort;
      state.order = state.sort === key && state.order === "asc" ? "desc" : "asc";
      state.sort = key;
      state.offset = 0;
      for (const other of document.querySelectorAll("#entries th[data-sort]")) other.removeAttribute("aria-sort");
      th.setAttribute("aria-sort", state.order === "asc" ? "ascending" : "descending");
      go();
    });
  }
  $("#page-size").addEventListener("change", (ev) => {
    state.limit = Number(ev.target.value);
    state.offset = 0;
    go();
  });
  $("#prev").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - state.limit);
    go();
  });
  $("#next").addEventListener("click", () => {
    if (state.offset + state.limit < state.total) state.offset += state.limit;
    go();
  });
}
