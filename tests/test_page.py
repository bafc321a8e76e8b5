"""The team's page (`GET /`): a real `embrm serve` on loopback with a token, a store of a
few entries (some with hostile names), a running dataset job and two served reward
models, driven in headless Chromium through Playwright.

The API tests at the top need no browser; the ones marked ``browser`` skip, saying why,
where Playwright or a Chromium binary is missing (`.ci/run` installs both, so CI runs them).
Set ``EMBRM_UPDATE_SCREENSHOT=1`` to write the README's `docs/serve-page.png` from the run.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from embrm.cli import main as cli
from embrm.store import open_store

from conftest import ROOT
from servers import Server, http

pytest.importorskip("fastapi")
TOKEN = "page-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# What the store accepts as a dataset name (no '/' or control characters), and would run if
# the page ever put it into HTML: each one raises a dialog or sets a global if it executes.
HOSTILE = ['<img src=x onerror="alert(1)"> \'single\' "double"', "<script>window.pwned=1;alert(2)<|script>&amp;"]
# Responses may hold anything: markup, quotes, control characters, a right-to-left override.
RESPONSES = ['Sure! <script>window.pwned=1</script> "quoted" & \'single\'.',
             "No.\x07\x1b[31m red\x1b[0m <img src=x onerror=alert(3)>",
             "I don't know \u202e reversed\ttab."]
PROMPTS = [f"Question number {i}: what do you think?" for i in range(24)]
TONES = [" Great, wonderful, thanks!", " It is fine.", " Bad. Awful.", " Yes, good and kind.", " Meh.",
         " Absolutely lovely answer, thank you so much."]
CHROMIUM = os.environ.get("EMBRM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
BIG = 12_000  # rows of the running job: it outlasts the tests, which never wait for it to end
WAIT_MS = 20_000  # the longest any one thing may take to appear on the page


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _api(site: dict, path: str, payload: object | None = None) -> dict:
    method, body = ("GET", None) if payload is None else ("POST", json.dumps(payload).encode())
    status, out, _ = http(method, site["server"].url + path, body, {**AUTH, "Content-Type": "application/json"})
    assert status == 200, (path, status, out[:300])
    return json.loads(out)


def _submit(client, path: Path, name: str | None = None) -> str:
    """Upload a dataset to the service and start its job (as `extract --server` does)."""
    from embrm.extractor.datasets import DatasetSpec
    from embrm.extractor.plan import scan_dataset

    scan = scan_dataset(DatasetSpec(str(path)))
    client.upload(scan.rows(), scan.dataset_hash, name or scan.name, scan.kind)
    client.start_entry(scan.dataset_hash, name or scan.name, scan.kind, scan.source)
    return scan.dataset_hash


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_model):
    """The served store: an extracted multi-response entry, two reward models trained on it
    (``--rm``), two small datasets with hostile names extracted by the service, and a big
    one whose job (8 rows a commit: slow on purpose) runs while the tests look at the page."""
    from embrm.store.service import ServiceStore

    d = tmp_path_factory.mktemp("page")
    recs = [{"prompt": p, "responses": [f"[{i}]{t}" for t in TONES],  # the tone last: the pooled token sees it
             "rewards": [float(len(t) % 7 - 3 + (i % 3)) for t in TONES]} for i, p in enumerate(PROMPTS)]
    data, store = _jsonl(d / "train.jsonl", recs), d / "store"
    r = CliRunner()
    res = r.invoke(cli, ["extract", "--dataset", str(data), "--model", str(tiny_model), "--dtype", "float32",
                         "--store", str(store), "--quiet"])
    assert res.exit_code == 0, res.output
    model_key = open_store(store).entries()[0].model_hash
    runs = {"bt": ["--method", "bt", "--ensemble", "3", "--hidden", "16,8"],
            "clf": ["--method", "clf", "--ensemble", "2", "--hidden", "8"]}
    for name, args in runs.items():
        res = r.invoke(cli, ["train", "--model-key", model_key, "--dataset-key", "train", *args, "--epochs", "10",
                             "--out", str(d / "runs" / name), "--store", str(store)])
        assert res.exit_code == 0, res.output
    rm_args = [a for name in runs for a in ("--rm", f"{name}={d / 'runs' / name}")]
    server = Server(tiny_model, store, "--window", "8", *rm_args, env={"EMBRM_TOKEN": TOKEN})
    try:
        client = ServiceStore(server.url, token=TOKEN)
        hostile = {}
        for i, name in enumerate(HOSTILE):
            small = _jsonl(d / f"small{i}.jsonl", [{"prompt": f"P{i}.{j}", "chosen": f" good {j}",
                                                    "rejected": f" bad {j}"} for j in range(3 + i)])
            hostile[_submit(client, small, name)] = name
        big = _jsonl(d / "big.jsonl", [{"prompt": f"Question {i % 50}?", "response": f" answer {i} " * (1 + i % 3)}
                                       for i in range(BIG)])
        job = _submit(client, big)
        yield {"server": server, "store": store, "hostile": hostile, "job": job}
    finally:
        server.stop()


# ------------------------------------------------------------------ the API the page reads
def test_entries_are_paged_filtered_and_sorted_by_the_service(site):
    everything = _api(site, "/v1/entries")
    assert everything["total"] == len(everything["data"]) >= 4 and everything["limit"] is None
    names = [e["dataset"] for e in everything["data"]]
    assert set(site["hostile"].values()) <= set(names)
    pages = [_api(site, f"/v1/entries?offset={o}&limit=2")["data"] for o in range(0, len(names), 2)]
    assert [e["dataset"] for p in pages for e in p] == names  # pages tile the catalog, in its order
    by_rows = _api(site, "/v1/entries?sort=rows&order=desc")["data"]
    assert [e["rows"] for e in by_rows] == sorted((e["rows"] for e in everything["data"]), reverse=True)
    by_size = _api(site, "/v1/entries?sort=size")["data"]
    assert [e["vector_bytes"] for e in by_size] == sorted(e["vector_bytes"] for e in everything["data"])
    assert all(e["vector_bytes"] == e["rows"] * e["dim"] * len(e["layers"]) * 4 for e in by_size)  # float32
    hit = _api(site, "/v1/entries?q=ONERROR")  # case-insensitive, in the names
    assert [e["dataset"] for e in hit["data"]] == [HOSTILE[0]] and hit["total"] == 1
    dh = next(iter(site["hostile"]))
    assert [e["dataset_hash"] for e in _api(site, f"/v1/entries?q={dh[:10]}")["data"]] == [dh]
    for bad, param in (("limit=0", "limit"), ("limit=100000", "limit"), ("offset=-1", "offset"),
                       ("sort=secret", "sort")):
        status, out, _ = http("GET", f"{site['server'].url}/v1/entries?{bad}", None, AUTH)
        err = json.loads(out)["error"]
        assert status == 400 and param in err["param"] and set(err) == {"message", "type", "param", "code"}


def test_jobs_and_stats_are_json_from_the_same_numbers_as_metrics(site):
    jobs = _api(site, "/v1/jobs")["data"]
    assert {j["dataset_hash"] for j in jobs} >= {site["job"], *site["hostile"]}
    assert [j["status"] == "running" for j in jobs] == sorted((j["status"] == "running" for j in jobs), reverse=True)
    item = {"prompt": "A stats check?", "response": " Counted once as a miss, then as a hit."}
    for _ in range(2):
        _api(site, "/v1/rewards", {"items": [item]})
    stats = _api(site, "/v1/stats")
    status, text, _ = site["server"].get("/metrics", AUTH)
    samples = {k: float(v) for k, v in (line.rsplit(" ", 1) for line in text.decode().splitlines()
                                        if line and not line.startswith("#"))}
    # hits and misses move only with online requests (none meanwhile); the job keeps calling the model
    assert (stats["hits"], stats["misses"]) == (samples["embrm_cache_hits_total"], samples["embrm_cache_misses_total"])
    assert stats["hits"] >= 1 and stats["misses"] >= 1
    assert 0 < stats["forward_calls"] <= samples["embrm_batch_items_count"]
    assert stats["items_per_call"] >= 1 and set(stats["queue"]) <= {"online", "job"}
    assert stats["model_hash"] == _api(site, "/v1/info")["model_hash"]
    for path in ("/v1/jobs", "/v1/stats", "/v1/entries"):
        assert site["server"].get(path)[0] == 401  # no token, no data


def test_the_shell_is_static_public_and_strict(site, tiny_model, tmp_path):
    """`/` and `/page/*` hold no data, so they need no token; they carry the CSP and
    nosniff; only the page's own files are served; a service without tokens says so."""
    from starlette.testclient import TestClient

    from embrm.extractor.embedder import EmbeddingSpec
    from embrm.serve.routes.page import STATIC
    from embrm.serve.runtime import build

    status, html, headers = site["server"].get("/")
    assert status == 200 and b'data-auth="on"' in html and headers["content-type"].startswith("text/html")
    for path, kind in (("/page/page.js", "text/javascript"), ("/page/page.css", "text/css")):
        status, _, h = site["server"].get(path)
        assert status == 200 and h["content-type"].startswith(kind) and h["x-content-type-options"] == "nosniff"
        assert h["content-security-policy"] == headers["content-security-policy"]
    assert b"<script>" not in html and b"style=" not in html  # no inline script or style for the CSP to allow
    for f in STATIC.glob("*.js"):  # nothing parses a string as markup or code
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function("):
            assert sink not in f.read_text(), (f.name, sink)
    for bad in ("/page/index.html", "/page/..%2Fpage.py", "/page/%2E%2E", "/page/nope.js"):
        status, out, _ = site["server"].get(bad)
        assert status == 404 and json.loads(out)["error"]["type"] == "not_found_error", bad
    app, _ = build(EmbeddingSpec(model=str(tiny_model), dtype="float32"), str(tmp_path / "s"), "cpu")
    with TestClient(app) as c:
        assert b'data-auth="off"' in c.get("/").content  # no tokens: the page asks for none


# -------------------------------------------------------------------------- the browser
def _chromium() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the page tests need Playwright: pip install playwright (or `make test`, which installs it)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"the page tests need Chromium at {CHROMIUM}: apt-get install -y chromium (.ci/run does)")
    return CHROMIUM


class Watched:
    """A browser page whose console errors, uncaught exceptions, dialogs and failed
    requests are all recorded: a page that works shows none of them."""

    def __init__(self, context):
        self.page = context.new_page()
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"exception: {e}"))
        self.page.on("dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss()))
        self.page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url}"))
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(f"{r.status}: {r.url}"))

    def clean(self) -> None:
        assert self.page.evaluate("window.pwned") is None
        assert not self.problems, self.problems


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    exe = _chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def ui(browser, site):
    """The page, logged in with the token once (typed into its form, as a user does)."""
    context = browser.new_context(viewport={"width": 1360, "height": 900}, service_workers="block")
    w = Watched(context)
    w.page.set_default_timeout(WAIT_MS)
    w.page.goto(site["server"].url + "/")
    w.page.fill("#token", TOKEN)
    w.page.click("#login button[type=submit]")
    w.page.wait_for_selector("#entries-body tr.entry")
    yield w
    context.close()


@pytest.mark.browser
def test_without_the_token_the_page_shows_no_data(browser, site):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    seen = []
    page.on("request", lambda r: seen.append(r.url))
    res = page.goto(site["server"].url + "/")
    headers = res.headers
    assert "script-src 'self'" in headers["content-security-policy"] and "unsafe" not in \
        headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"
    page.wait_for_selector("#login:not([hidden])")
    assert page.is_hidden("#main") and page.locator("tr.entry, tr.job, tr.rm, .stat").count() == 0
    assert not any("/v1/" in u for u in seen)  # without a token the page asks the API nothing
    page.fill("#token", "a-wrong-token-of-enough-length")
    page.click("#login button[type=submit]")
    page.wait_for_function("() => document.querySelector('#login-error').textContent.includes('refused')")
    assert page.is_hidden("#main") and page.locator("tr.entry, tr.job, tr.rm, .stat").count() == 0
    assert page.evaluate("sessionStorage.getItem('embrm-token')") is None  # a refused token is not kept
    status = page.evaluate("fetch('/v1/entries').then(r => r.status)")
    assert status == 401
    page.fill("#token", TOKEN)
    page.click("#login button[type=submit]")
    page.wait_for_selector("#entries-body tr.entry")
    page.click("#logout")  # forgetting the token clears every piece of data from the screen
    page.wait_for_selector("#login:not([hidden])")
    assert page.locator("tr.entry, tr.job, tr.rm, .stat").count() == 0
    context.close()


@pytest.mark.browser
def test_the_catalog_lists_the_entries_and_hostile_names_stay_text(ui, site):
    page = ui.page
    want = _api(site, "/v1/entries")["data"]
    page.wait_for_function(f"() => document.querySelectorAll('#entries-body tr.entry').length === {len(want)}")
    shown = page.eval_on_selector_all("#entries-body tr.entry td.dataset .name", "els => els.map(e => e.textContent)")
    assert shown == [e["dataset"] for e in want]  # every entry, in the catalog's order, each name as its text
    assert page.locator("#entries img, #entries script, #entries b").count() == 0  # no markup came alive
    assert page.text_content("#store-count") == f"1–{len(want)} of {len(want)} entries"
    page.fill("#filter", "onerror")
    page.wait_for_function("() => document.querySelectorAll('#entries-body tr.entry').length === 1")
    assert page.text_content("#entries-body td.dataset .name") == HOSTILE[0]
    page.fill("#filter", "")
    page.click("#entries th[data-sort=rows] button")
    page.click("#entries th[data-sort=rows] button")  # twice: descending
    page.wait_for_selector("#entries th[data-sort=rows][aria-sort=descending]")
    page.wait_for_function(f"() => document.querySelectorAll('#entries-body tr.entry').length === {len(want)}")
    rows = page.eval_on_selector_all("#entries-body tr.entry td.rows", "els => els.map(e => e.textContent)")
    counts = [int(r.split("/")[0].replace(",", "")) for r in rows]
    assert counts == sorted(counts, reverse=True) and len(set(counts)) > 1, rows  # sorted by the service
    job_names = page.eval_on_selector_all("#jobs-body tr.job .name", "els => els.map(e => e.textContent)")
    assert set(HOSTILE) <= set(job_names)
    ui.clean()


@pytest.mark.browser
def test_a_running_jobs_progress_advances_on_screen(ui, site):
    page = ui.page
    row = f"#jobs-body tr.job[data-dataset='{site['job']}']"
    page.wait_for_selector(row)
    done = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(set(done)) < 3:  # three different counts, read off the screen
        text = page.text_content(f"{row} .rows-done")
        n = int(text.split("/")[0].replace(",", ""))
        if not done or n != done[-1]:
            done.append(n)
        page.wait_for_timeout(250)
    assert len(set(done)) >= 3 and done == sorted(done), done
    assert page.text_content(f"{row} .rows-done").endswith(f"/ {BIG:,} rows")
    page.wait_for_function(f"() => document.querySelector(\"{row} .tps\").textContent !== '–'")
    assert page.locator(f"{row} progress").get_attribute("max") == str(BIG)
    ui.clean()


@pytest.mark.browser
def test_two_reward_models_curves_overlay(ui, site):
    page = ui.page
    rms = {r["name"]: r for r in _api(site, "/v1/rms")["data"]}
    assert set(rms) == {"bt", "clf"}
    page.wait_for_selector("#rms-body tr.rm[data-rm=clf]")
    page.check("#rms-body input[data-rm=bt]")
    page.check("#rms-body input[data-rm=clf]")
    for name, r in rms.items():
        m = r["metrics"]
        bon = f"#charts svg g.series[data-series='{name}:bon'] circle"
        page.wait_for_selector(bon)
        got = page.eval_on_selector_all(bon, "els => els.map(e => [+e.dataset.x, +e.dataset.y])")
        assert got == [[n, b] for n, b in zip(m["N"], m["aggregations"]["mean"]["bon"])]  # the numbers drawn
        assert page.locator(f"#charts g.series[data-series='{name}:oracle'] path").count() == 1
        cal = page.eval_on_selector_all(f"#charts g.series[data-series='{name}:calibration'] circle",
                                        "els => els.map(e => [+e.dataset.x, +e.dataset.y])")
        c = m["calibration"]
        want = [[x, y] for x, y, n in zip(c["confidence"], c["frequency"], c["count"]) if n > 0]
        assert len(want) >= 2 and cal == want
    assert page.locator("#charts svg").count() == 2  # both curves on the same two charts
    page.select_option("#bon-agg", "min")
    page.wait_for_function("() => document.querySelector('#charts figcaption').textContent.includes('(min)')")
    got = page.eval_on_selector_all("#charts g.series[data-series='bt:bon'] circle",
                                    "els => els.map(e => +e.dataset.y)")
    assert got == rms["bt"]["metrics"]["aggregations"]["min"]["bon"]
    page.select_option("#bon-agg", "mean")
    ui.clean()


@pytest.mark.browser
def test_the_playground_scores_three_responses_and_marks_the_best(ui, site):
    page = ui.page
    prompt = "Tell me <b>something</b> \"nice\"?"
    page.fill("#play-prompt", prompt)
    for box, text in zip(page.locator("#play-responses textarea").all(), RESPONSES):
        box.fill(text)
    page.select_option("#play-rm", "bt")
    page.select_option("#play-agg", "mean-std")
    page.fill("#play-coef", "0.5")
    page.click("#play-score")
    page.wait_for_selector("#play-body tr.scored >> nth=2")
    want = _api(site, "/v1/rewards", {"rm": "bt", "aggregation": "mean-std", "beta": 0.5,
                                      "items": [{"prompt": prompt, "response": t} for t in RESPONSES]})["data"]
    rows = page.eval_on_selector_all("#play-body tr.scored", "els => els.map(e => [+e.dataset.reward, "
                                     "+e.dataset.std, e.querySelector('.response-text').textContent, "
                                     "e.classList.contains('best')])")
    assert [r[2] for r in rows] == RESPONSES  # the texts as typed, control characters and all, as text
    assert [r[0] for r in rows] == [w["reward"] for w in want] and [r[1] for r in rows] == [w["std"] for w in want]
    best = max(range(3), key=lambda i: (want[i]["reward"], -i))
    assert [r[3] for r in rows] == [i == best for i in range(3)]
    assert page.locator("#play-body tr.best .badge.pick").count() == 1
    assert f"picks response {best + 1}" in page.text_content("#play-status")
    assert page.locator("#playground script, #playground img, #playground b").count() == 0
    ui.clean()


@pytest.mark.browser
def test_the_page_has_no_errors_and_its_screenshot(ui, site, tmp_path):
    page = ui.page
    page.wait_for_selector(f"#jobs-body tr.job[data-dataset='{site['job']}']")
    out = ROOT / "docs" / "serve-page.png" if os.environ.get("EMBRM_UPDATE_SCREENSHOT") else tmp_path / "page.png"
    page.screenshot(path=str(out), full_page=True)
    assert out.stat().st_size > 50_000  # a real rendering, not a blank page
    ui.clean()


@pytest.mark.browser
def test_thousands_of_entries_arrive_a_page_at_a_time(ui, site):
    """2,000 more catalog rows (one commit through the catalog's own merge): the page asks
    for 50 at a time, shows the total, and pages and sorts on the service."""
    from embrm.store import schema as S
    from embrm.store.catalog import now
    from embrm.store.tables import merge

    store = open_store(site["store"])
    t = now()
    rows = [{"entry_id": S.entry_id("b" * 64, f"{i:064x}"), "model_hash": "b" * 64, "model_name": "bulk-model",
             "model_config": "{}", "dataset_hash": f"{i:064x}", "dataset_name": f"bulk-{i:04d}",
             "dataset_source": "{}", "kind": "pairwise", "n_rows": i, "rows": i, "dim": 8, "dtype": "float32",
             "layers": "[-1]", "status": "complete", "truncated": 0, "created_at": t, "updated_at": t,
             "embrm_version": "test"} for i in range(2000)]
    with store.tables.lock(S.CATALOG_TABLE):
        merge(store.tables.get(S.CATALOG_TABLE), "entry_id", pa.Table.from_pylist(rows, schema=S.CATALOG_SCHEMA))
    total = _api(site, "/v1/entries")["total"]
    page = ui.page
    asked = []
    page.on("request", lambda r: "/v1/entries" in r.url and asked.append(r.url))
    page.fill("#filter", "bulk-")
    page.click("#entries th[data-sort=dataset] button")
    page.wait_for_selector("#entries th[data-sort=dataset][aria-sort=ascending]")
    page.wait_for_function("() => document.querySelector('#store-count').textContent === '1–50 of 2,000 entries'")
    assert page.locator("#entries-body tr.entry").count() == 50
    assert page.text_content("#entries-body td.dataset .name") == "bulk-0000"
    page.click("#next")
    page.wait_for_function("() => document.querySelector('#store-count').textContent === '51–100 of 2,000 entries'")
    assert page.text_content("#entries-body td.dataset .name") == "bulk-0050"
    page.fill("#filter", "")
    page.wait_for_function(f"() => document.querySelector('#store-count').textContent === '1–50 of {total:,} entries'")
    assert asked and all("limit=50" in u for u in asked)  # never the whole catalog
    ui.clean()
