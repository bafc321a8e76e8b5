"""``embrm serve``: real uvicorn processes on loopback with the tiny Llama, and in-process
ASGI tests. Every request loop is bounded in count and time and goes to 127.0.0.1 only."""
from __future__ import annotations

import base64
import json
import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from embrm.cli import main as cli
from embrm.extractor import extract
from embrm.store import item_key, open_store
from embrm.store import schema as S

from conftest import extract_config
from servers import Server
from servers import http as _http

pytest.importorskip("fastapi")
TEXTS = ["The cat sat.", "A longer sentence about dogs and parks.", "Hi", "Numbers: 1 2 3 4 5.", "Last one!"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model):
    s = Server(tiny_model, tmp_path_factory.mktemp("served") / "store", "--max-body-bytes", str(4 << 20))
    yield s
    assert s.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after a graceful shutdown


def _offline(tmp_path: Path, model: Path, rows: list[dict]) -> np.ndarray:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "offline.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = extract(extract_config(data, model, tmp_path / "offline-store", dtype="float32", quiet=True))
    return open_store(tmp_path / "offline-store").load(res.model_hash, res.dataset_hash).vectors


def _b64(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype="<f4")


# ------------------------------------------------------------- equivalence
def test_served_vectors_equal_offline_extraction_and_are_cached_after(server, tmp_path, tiny_model):
    want = _offline(tmp_path, tiny_model, [{"prompt": "", "response": t} for t in TEXTS])
    status, out = server.post("/v1/embeddings", {"input": TEXTS, "encoding_format": "float"})
    assert status == 200 and [d["index"] for d in out["data"]] == list(range(len(TEXTS)))
    np.testing.assert_allclose(np.array([d["embedding"] for d in out["data"]]), want, atol=2e-5)
    assert out["usage"]["prompt_tokens"] == sum(len(t) for t in TEXTS)  # one token a character
    status, out = server.post("/v1/embeddings", {"input": TEXTS[:2], "encoding_format": "base64"})
    np.testing.assert_allclose(np.stack([_b64(d["embedding"]) for d in out["data"]]), want[:2], atol=2e-5)
    items = [{"prompt": "Q: colour?", "response": " Blue."}, {"prompt": "Q: size?", "response": " Big."}]
    want2 = _offline(tmp_path / "b", tiny_model, items)
    status, out = server.post("/v1/embed", {"items": items})
    assert status == 200 and [i["cached"] for i in out["items"]] == [False, False]
    np.testing.assert_allclose(np.array([i["vectors"]["-1"] for i in out["items"]]), want2, atol=2e-5)
    assert out["items"][0]["item_key"] == item_key("Q: colour?", " Blue.")
    status, again = server.post("/v1/embed", {"items": items})
    assert [i["cached"] for i in again["items"]] == [True, True]
    status, looked = server.post("/v1/embed", {"item_keys": [out["items"][1]["item_key"], "0" * 32]})
    assert [i["found"] for i in looked["items"]] == [True, False]
    np.testing.assert_array_equal(looked["items"][0]["vectors"]["-1"], out["items"][1]["vectors"]["-1"])
    status, body, headers = _http("POST", server.url + "/v1/embed", json.dumps({"items": items}).encode(),
                                  {"Content-Type": "application/json", "Accept": "application/vnd.apache.arrow.stream"})
    t = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
    assert t.schema.names[:4] == ["item_key", "n_tokens", "truncated", "layer_m1"]
    assert t["cached"].to_pylist() == [True] * 2
    np.testing.assert_allclose(np.stack(t["layer_m1"].to_numpy(zero_copy_only=False)), want2, atol=2e-5)


def test_the_openai_client_reads_both_encodings(server, tmp_path, tiny_model):
    openai = pytest.importorskip("openai")
    want = _offline(tmp_path, tiny_model, [{"prompt": "", "response": t} for t in TEXTS])
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    name = client.models.list().data[0].id
    got = client.embeddings.create(input=TEXTS, model=name)  # the client asks for base64 by default
    np.testing.assert_allclose(np.array([d.embedding for d in got.data]), want, atol=2e-5)
    got = client.embeddings.create(input=TEXTS[0], model=name, encoding_format="float")
    np.testing.assert_allclose(got.data[0].embedding, want[0], atol=2e-5)
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.embeddings.create(input="x", model="text-embedding-3-small")


def test_concurrent_clients_are_batched_and_single_flight(tmp_path, tiny_model):
    s = Server(tiny_model, tmp_path / "store", "--max-wait-ms", "50")
    try:
        texts = [f"concurrent text number {i} " * (1 + i % 4) for i in range(32)]
        results: dict[int, object] = {}

        def call(i: int, payload: dict) -> None:
            results[i] = s.post("/v1/embeddings", payload)

        threads = [threading.Thread(target=call, args=(i, {"input": texts[i]})) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        want = _offline(tmp_path, tiny_model, [{"prompt": "", "response": t} for t in texts])
        for i in range(32):
            status, out = results[i]
            assert status == 200
            np.testing.assert_allclose(out["data"][0]["embedding"], want[i], atol=2e-5)
        metrics = s.get("/metrics")[1].decode()
        total = _metric(metrics, "embrm_batch_items_sum")
        calls = _metric(metrics, "embrm_batch_items_count")
        assert total == 32 and total / calls > 1, (total, calls)
        results.clear()
        same = {"input": "one missing text that everybody wants"}
        threads = [threading.Thread(target=call, args=(i, same)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len({json.dumps(results[i][1]["data"]) for i in range(32)}) == 1
        assert _metric(s.get("/metrics")[1].decode(), "embrm_batch_items_sum") == 33  # one more forward item
    finally:
        s.stop()


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


# ------------------------------------------------------------------- auth
def test_every_route_needs_a_token_but_health_and_the_page_shell(tmp_path, tiny_model):
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from embrm.extractor.embedder import EmbeddingSpec
    from embrm.serve.guard import public
    from embrm.serve.runtime import build

    token = "secret-token-of-the-team-0123"
    app, svc = build(EmbeddingSpec(model=str(tiny_model), dtype="float32"), str(tmp_path / "s"), "cpu",
                     tokens={"alice": token})
    routes = [r for r in svc_app_routes(app) if isinstance(r, Route)]
    assert {"/health", "/v1/embeddings", "/v1/embed", "/v1/entries", "/v1/jobs", "/v1/stats", "/metrics",
            "/openapi.json", "/"} <= {r.path for r in routes}
    assert {r.path for r in routes if public(r.path)} == {"/health", "/", "/page/{name}"}
    with TestClient(app) as c:
        for r in routes:
            path = re.sub(r"{[^}]+}", "x", r.path)
            for method in sorted(r.methods - {"HEAD"}):
                for headers, allowed in (({}, False), ({"Authorization": "Bearer wrong-token-xxxxxxxx"}, False),
                                         ({"Authorization": f"Bearer {token}"}, True)):
                    res = c.request(method, path, headers=headers)
                    if public(r.path) or allowed:  # /health and the page's static shell (no data in it)
                        assert res.status_code != 401, (method, r.path, headers)
                    else:
                        assert res.status_code == 401, (method, r.path, headers)
                        assert res.json()["error"]["type"] == "authentication_error"
    res = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--model", str(tiny_model), "--store",
                                   str(tmp_path / "s2")], env={"EMBRM_TOKEN": ""})
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "refusing to serve on 0.0.0.0" in res.output
    assert not (tmp_path / "s2").exists()


def svc_app_routes(app):
    """Every route of the app, inside the guard and inside included routers (FastAPI
    0.165 keeps an included router as one entry; earlier versions copied its routes)."""
    inner = app
    while not hasattr(inner, "routes"):
        inner = inner.app
    out, todo = [], list(inner.routes)
    while todo:
        r = todo.pop(0)
        nested = getattr(r, "original_router", None)
        if nested is not None:
            todo.extend(nested.routes)
        else:
            out.append(r)
    return out


# ---------------------------------------------------------------- bad input
BAD = [
    (b"{not json", "application/json", 400),
    (json.dumps({"input": 5}).encode(), "application/json", 400),
    (json.dumps({"input": [[1, 2, 3]]}).encode(), "application/json", 400),
    (json.dumps({"input": [1, 2]}).encode(), "application/json", 400),
    (json.dumps({"input": ""}).encode(), "application/json", 400),
    (json.dumps({"input": "\ud800 lone"}).encode(), "application/json", 400),
    (json.dumps({"input": "x", "model": "gpt-4"}).encode(), "application/json", 404),
    (json.dumps({"input": "x", "dimensions": 7}).encode(), "application/json", 400),
    (json.dumps({"input": ["x"] * 10_000}).encode(), "application/json", 413),
    (json.dumps({"input": "x", "encoding_format": "int8"}).encode(), "application/json", 400),
    (json.dumps({"input": "y" * (5 << 20)}).encode(), "application/json", 413),
    (b"", "application/json", 400),
]


def test_malformed_requests_get_4xx_json_and_leave_the_store_as_it_was(server):
    server.post("/v1/embeddings", {"input": "warm up"})
    time.sleep(0.6)  # let the committer write what warm-up computed
    store = open_store(server.store)
    before = {n: store.tables.get(n).version for n in store.tables.names()}
    for body, ctype, want in BAD:
        status, raw, _ = _http("POST", server.url + "/v1/embeddings", body, {"Content-Type": ctype})
        assert status == want, (body[:60], status, raw[:300])
        err = json.loads(raw)["error"]
        assert status == want and set(err) == {"message", "type", "param", "code"}, (body[:60], status, err)
    for path, payload, want in [("/v1/embed", {"items": [{"prompt": "a"}]}, 400),
                                ("/v1/embed", {"items": [], "layers": [-1]}, 400),
                                ("/v1/embed", {"item_keys": ["nothex"]}, 400),
                                ("/v1/embed", {"items": [{"prompt": "a", "response": "b"}], "layers": [5]}, 400),
                                ("/v1/entries", {"dataset": "f" * 64}, 404),
                                ("/v1/entries", {"dataset": 3}, 400)]:
        status, out = server.post(path, payload)
        assert status == want and "message" in out["error"], (path, payload, status, out)
    for path, want in [("/v1/entries/nope/nope", 404), ("/v1/entries/nope/nope/vectors", 404), ("/nothing", 404)]:
        status, raw, _ = server.get(path)
        assert status == want and "error" in json.loads(raw)
    status, raw, _ = _http("PUT", server.url + "/v1/datasets?kind=pointwise", b"not arrow", {"Content-Type": "x"})
    assert status == 400 and json.loads(raw)["error"]["code"] == "invalid_rows"
    assert server.get("/health")[0] == 200
    store = open_store(server.store)
    assert {n: store.tables.get(n).version for n in store.tables.names()} == before


def test_fuzzing_the_openapi_document_finds_no_server_error(tmp_path, tiny_model):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, settings

    from embrm.extractor.embedder import EmbeddingSpec
    from embrm.serve.runtime import build

    # a reward model to serve, so that the reward routes are fuzzed past the lookup of their model
    data = tmp_path / "rw.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i // 4}", "response": f" r{i}", "reward": float(i % 5)})
                            + "\n" for i in range(40)))
    res = extract(extract_config(data, tiny_model, tmp_path / "s", dtype="float32", quiet=True))
    r = CliRunner().invoke(cli, ["train", "--model-key", res.model_hash, "--dataset-key", "rw", "--method", "linear",
                                 "--epochs", "2", "--out", str(tmp_path / "run"), "--store", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    app, svc = build(EmbeddingSpec(model=str(tiny_model), dtype="float32"), str(tmp_path / "s"), "cpu",
                     rms={"lin": tmp_path / "run"})
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures = []
    from schemathesis.python import asgi

    with asgi.get_client(app) as client:  # one client: the lifespan (model thread) runs once
        for op in schema.get_all_operations():
            operation = op.ok()

            @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @schemathesis_given(operation)
            def check(case):
                res = case.call(session=client)
                if res.status_code >= 500:
                    failures.append((operation.label, res.status_code, res.text[:200]))
                elif res.status_code >= 400 and res.status_code != 405:
                    assert set(res.json()["error"]) == {"message", "type", "param", "code"}, res.text[:200]

            check()
    assert not failures, failures[:3]


def schemathesis_given(operation):
    from hypothesis import given

    return given(case=operation.as_strategy())


# -------------------------------------------------------------- remote store
def _train_entry(store_path: Path) -> None:
    rng = np.random.default_rng(0)
    p, k, d = 40, 4, 8
    x = rng.standard_normal((p * k, d)).astype(np.float32)
    r = (x @ rng.standard_normal(d)).reshape(p, k)
    store = open_store(store_path, create=True)
    rows = [{"position": i, "item_key": item_key(f"p{i // k}", f"r{i}"), "prompt_id": i // k, "response_index": i % k,
             "role": "", "label": None, "reward": float(r.reshape(-1)[i]), "prompt": f"p{i // k}",
             "response": f"r{i}"} for i in range(p * k)]
    store.rows.write("d" * 64, rows, len(rows))
    store.begin_entry("m" * 64, "synthetic-model", {}, "d" * 64, "synthetic-data", {}, "multi", len(rows))
    store.writer.write("m" * 64, [x_["item_key"] for x_ in rows], {-1: x}, np.ones(len(rows)),
                       np.zeros(len(rows), bool))
    store.finish_entry("m" * 64, "d" * 64)


def test_trainers_read_the_store_through_the_service(server, tmp_path):
    _train_entry(server.store)
    local = open_store(server.store).load("synthetic-model", "synthetic-data")
    from embrm.store.service import ServiceStore

    remote = ServiceStore(server.url)
    pulled = remote.load("synthetic-model", "synthetic-data")
    assert pulled.vectors.dtype == local.vectors.dtype and np.array_equal(pulled.vectors, local.vectors)
    for f in ("prompt_id", "response_index", "reward", "n_tokens", "truncated"):
        np.testing.assert_array_equal(getattr(pulled, f), getattr(local, f))
    assert pulled.item_key == local.item_key and pulled.entry == local.entry
    path = f"/v1/entries/{'m' * 64}/{'d' * 64}/vectors"
    status, _, headers = server.get(path)
    assert status == 200 and server.get(path, {"If-None-Match": headers["etag"]})[0] == 304
    status, body, _ = server.get(path + "?offset=150&limit=100")
    assert pa.ipc.open_stream(pa.py_buffer(body)).read_all()["position"].to_pylist() == list(range(150, 160))
    args = ["train", "--model-key", "synthetic-model", "--dataset-key", "synthetic-data", "--ensemble", "2",
            "--hidden", "16", "--epochs", "5", "--bon", "1,2,4", "--seed", "3"]
    r = CliRunner()
    via = r.invoke(cli, [*args, "--store", server.url, "--out", str(tmp_path / "a")])
    direct = r.invoke(cli, [*args, "--store", str(server.store), "--out", str(tmp_path / "b")])
    assert via.exit_code == direct.exit_code == 0, via.output + direct.output
    assert via.output.split("pairs in")[0] == direct.output.split("pairs in")[0]
    m_via = json.loads((tmp_path / "a" / "metrics.json").read_text())
    m_direct = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert m_via["aggregations"] == m_direct["aggregations"]
    res = r.invoke(cli, ["store", "ls", "--store", server.url])
    assert res.exit_code == 0 and "synthetic-data" in res.output
    res = r.invoke(cli, ["store", "export", "synthetic-model", "synthetic-data", "--out", str(tmp_path / "x.npy"),
                         "--store", server.url])
    assert res.exit_code == 0 and np.array_equal(np.load(tmp_path / "x.npy"), local.vectors)
    res = r.invoke(cli, ["store", "ls", "--store", "http://127.0.0.1:9"])
    assert res.exit_code == 2 and "cannot reach the embrm service" in res.output


def test_a_client_that_hangs_up_mid_stream_leaves_the_server_serving(server):
    _train_entry(server.store)
    host, port = server.url.removeprefix("http://").split(":")
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(f"GET /v1/entries/{'m' * 64}/{'d' * 64}/vectors HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert sock.recv(200).startswith(b"HTTP/1.1 200")
    assert server.get("/health")[0] == 200
    status, body, _ = server.get(f"/v1/entries/{'m' * 64}/{'d' * 64}/vectors")
    assert status == 200 and len(pa.ipc.open_stream(pa.py_buffer(body)).read_all()) == 160


# -------------------------------------------------------------- durability
def test_sigterm_flushes_what_was_computed(tmp_path, tiny_model):
    s = Server(tiny_model, tmp_path / "store", "--commit-seconds", "3600", "--commit-items", "100000")
    status, out = s.post("/v1/embeddings", {"input": TEXTS})
    assert status == 200
    store = open_store(tmp_path / "store")
    assert store.vectors.info(_model_hash(s)) is None  # nothing committed yet
    assert s.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    e = store.resolve(_model_hash(s), "served")
    keys = store.vectors.cached(e.model_hash).to_pylist()
    assert sorted(keys) == sorted(item_key("", t) for t in TEXTS) and e.rows == len(TEXTS)
    res = store.gc()  # served vectors are referenced: gc keeps them
    assert res["vectors_deleted"] == 0 and len(store.vectors.cached(e.model_hash)) == len(TEXTS)


def _model_hash(s: Server) -> str:
    if s.model_hash is None:
        s.model_hash = json.loads(s.get("/v1/info")[1])["model_hash"]
    return s.model_hash


def test_sigkill_during_a_dataset_job_then_the_same_request_has_every_item_once(tmp_path, tiny_model):
    recs = [{"prompt": f"Question {i % 50}?", "response": f" answer number {i} " * (1 + i % 3)} for i in range(1500)]
    data = tmp_path / "big.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = Server(tiny_model, tmp_path / "store", "--window", "32", "--lease-seconds", "2")  # docs/replicas.md
    mh = _model_hash(s)
    from embrm.extractor.datasets import DatasetSpec
    from embrm.extractor.plan import scan_dataset
    from embrm.store.service import ServiceStore

    scan = scan_dataset(DatasetSpec(str(data)))
    client = ServiceStore(s.url)
    client.upload(scan.rows(), scan.dataset_hash, scan.name, scan.kind)
    client.start_entry(scan.dataset_hash, scan.name, scan.kind, scan.source)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        vi = open_store(tmp_path / "store").vectors.info(mh)
        if vi is not None and open_store(tmp_path / "store").tables.get(S.vector_table(mh)).count_rows() >= 64:
            break
        time.sleep(0.05)
    s.stop(signal.SIGKILL)
    store = open_store(tmp_path / "store")
    assert store.resolve(mh, scan.dataset_hash).status == "partial"
    s2 = Server(tiny_model, tmp_path / "store")
    try:
        ServiceStore(s2.url).start_entry(scan.dataset_hash, scan.name, scan.kind, scan.source)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            job = ServiceStore(s2.url).entry_status(mh, scan.dataset_hash)["job"]
            if job and job["status"] not in ("running", "orphaned"):  # orphaned: until its lease expires
                break
            time.sleep(0.2)
        assert job["status"] == "complete" and job["cached"] >= 64
    finally:
        s2.stop()
    keys = open_store(tmp_path / "store").vectors.cached(mh).to_pylist()
    assert len(keys) == len(set(keys)) == 1500


def test_extract_through_the_server_gives_the_local_hashes_and_entry(server, tmp_path, tiny_model):
    recs = [{"prompt": f"P{i}", "chosen": f" good {i}", "rejected": f" bad {i}"} for i in range(12)]
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    r = CliRunner()
    res = r.invoke(cli, ["extract", "--dataset", str(data), "--server", server.url, "--quiet"])
    assert res.exit_code == 0, res.output
    local = extract(extract_config(data, tiny_model, tmp_path / "local", dtype="float32", quiet=True))
    assert f"[{local.dataset_hash[:12]}]" in res.output and f"[{local.model_hash[:12]}]" in res.output
    assert "computed 24" in res.output and "status complete" in res.output
    remote_entry = open_store(server.store).resolve(local.model_hash, local.dataset_hash)
    local_entry = open_store(tmp_path / "local").resolve(local.model_hash, local.dataset_hash)
    assert (remote_entry.kind, remote_entry.rows, remote_entry.dataset_name) == \
        (local_entry.kind, local_entry.rows, local_entry.dataset_name)
    np.testing.assert_allclose(open_store(server.store).load(local.model_hash, local.dataset_hash).vectors,
                               open_store(tmp_path / "local").load(local.model_hash, local.dataset_hash).vectors,
                               atol=2e-5)
    res = r.invoke(cli, ["extract", "--dataset", str(data), "--server", server.url, "--pooling", "mean"])
    assert res.exit_code == 2 and "--pooling mean (served: last)" in res.output and res.output.count("\n") == 1
    res = r.invoke(cli, ["extract", "--dataset", str(data), "--store", server.url, "--pooling", "last", "--quiet"])
    assert res.exit_code == 0 and "computed 0   cached 24" in res.output, res.output  # --store URL is --server URL


def test_store_rm_and_gc_reach_the_service_with_its_token(tmp_path, tiny_model):
    token = "team-token-0123456789abcdef"
    s = Server(tiny_model, tmp_path / "store", env={"EMBRM_TOKEN": token})
    try:
        _train_entry(s.store)
        r = CliRunner()
        args = ["synthetic-model", "synthetic-data", "--store", s.url]
        res = r.invoke(cli, ["store", "rm", *args], env={"EMBRM_TOKEN": ""})
        assert res.exit_code == 2 and "valid bearer token" in res.output and res.output.count("\n") == 1
        assert len(open_store(s.store).entries()) == 1
        res = r.invoke(cli, ["store", "rm", *args], env={"EMBRM_TOKEN": token})
        assert res.exit_code == 0 and "removed synthetic-model x synthetic-data" in res.output, res.output
        assert open_store(s.store).entries() == []
        res = r.invoke(cli, ["store", "gc", "--store", s.url], env={"EMBRM_TOKEN": token})
        assert res.exit_code == 0 and "tables dropped: 2" in res.output, res.output  # its rows and vectors
        assert open_store(s.store).vectors.info("m" * 64) is None
        res = r.invoke(cli, ["store", "rm", *args], env={"EMBRM_TOKEN": token})
        assert res.exit_code == 2 and "no entries yet" in res.output
    finally:
        s.stop()


def test_serve_without_its_extra_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # what an install without embrm[serve] looks like
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    res = CliRunner().invoke(cli, ["serve", "--store", str(tmp_path / "s")])
    assert res.exit_code == 2 and "pip install 'embrm[serve]'" in res.output and res.output.count("\n") == 1
