"""A pushed reward model is hostile input (issue 26): runs whose config disagrees with
their weights, non-finite weights and statistics, junk LightGBM text, rewards that
overflow, and the RM upload route's limits, on a local store, S3 (moto's server) and a
real ``embrm serve`` on loopback. Each refusal: one line (exit 2, or a 4xx JSON answer),
every table version unchanged, the service's memory where it was. Request loops are
bounded in count and time and go to 127.0.0.1 only."""
from __future__ import annotations

import copy
import json
import math
import select
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save

from embrm import runformat
from embrm.cli import main as cli
from embrm.errors import EmbrmError
from embrm.store import open_store
from embrm.store.wire import run_files_ipc

from servers import Server, http

pytest.importorskip("fastapi")
ARROW = {"Content-Type": "application/vnd.apache.arrow.stream"}
LIMIT = 2_000_000
DIM = 32  # the tiny model's width


# ------------------------------------------------------------------ runs
class Run:
    """A run as parts (config, tensors, statistics, LightGBM texts) to mutate, then files."""

    def __init__(self, cfg: dict, tensors: dict | None = None, stats: dict | None = None,
                 texts: dict | None = None):
        self.cfg, self.tensors, self.stats, self.texts = cfg, tensors, stats, texts or {}
        self.raw: dict[str, bytes] = {}  # files given as bytes, replacing what the parts make

    def copy(self) -> Run:
        r = Run(copy.deepcopy(self.cfg), None if self.tensors is None else dict(self.tensors),
                None if self.stats is None else dict(self.stats), dict(self.texts))
        r.raw = dict(self.raw)
        return r

    def files(self) -> dict[str, bytes]:
        out = {"config.json": json.dumps(self.cfg).encode()}
        if self.tensors is not None:
            out["weights.safetensors"] = save(self.tensors)
        if self.stats is not None:
            out["standardize.safetensors"] = save(self.stats)
        out.update({k: v.encode() for k, v in self.texts.items()})
        out.update(self.raw)
        return out

    def write(self, d: Path) -> Path:
        d.mkdir(parents=True, exist_ok=True)
        for n, b in self.files().items():
            (d / n).write_bytes(b)
        return d


def _cfg(method: str, members: int, hidden: list[int], fp: dict, **train) -> dict:
    return {"run_format": 2, "embrm_version": "test", "dim": fp["dim"], "model_hash": fp["model_hash"],
            "layer": fp["layer"], "model_name": "tiny",
            "train": {"method": method, "ensemble": members, "hidden": hidden, **train}}


def bt_run(fp: dict, hidden=(4,), members=2, seed=0, scale: float = 1.0) -> Run:
    rng = np.random.default_rng(seed)
    sizes = [fp["dim"], *hidden, 1]
    t = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        t[f"w{i}"] = (rng.standard_normal((members, a, b)) / math.sqrt(a)).astype(np.float32)
        t[f"b{i}"] = np.zeros((members, 1, b), np.float32)
    t[f"w{len(sizes) - 2}"][-1] *= scale  # the last member's output scaled
    return Run(_cfg("bt", members, list(hidden), fp), t)


def logreg_run(fp: dict) -> Run:
    rng = np.random.default_rng(1)
    d = fp["dim"]
    t = {"w0": rng.standard_normal((2, d, 1)).astype(np.float32), "b0": np.zeros((2, 1, 1), np.float32)}
    stats = {"mean": rng.standard_normal(d).astype(np.float32), "std": np.full(d, 2.0, np.float32)}
    return Run(_cfg("logreg", 2, [], fp, standardize=True, l2=0.1), t, stats)


def lgbm_run(fp: dict) -> Run:
    lgb = pytest.importorskip("lightgbm")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, fp["dim"]))
    b = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 4, "num_threads": 1},
                  lgb.Dataset(x, (x[:, 0] > 0).astype(int)), num_boost_round=3)
    return Run(_cfg("lgbm", 1, [8], fp), texts={"lgbm_0.txt": b.model_to_string()})


def _set(path: str, value):
    def change(r: Run) -> None:
        *parents, last = path.split(".")
        d = r.cfg
        for p in parents:
            d = d[p]
        if value is KeyError:
            del d[last]
        else:
            d[last] = value
    return change


def _tensor(name: str, value) -> callable:
    def change(r: Run) -> None:
        if value is KeyError:
            del r.tensors[name]
        else:
            r.tensors[name] = value(r.tensors.get(name)) if callable(value) else value
    return change


def _poke(where: str, value: float):
    def change(r: Run) -> None:
        src = r.stats if where in ("mean", "std") else r.tensors
        a = src[where].copy()
        a.reshape(-1)[0] = value
        src[where] = a
    return change


def _lgbm(old: str, new: str):
    def change(r: Run) -> None:
        import re

        text = r.texts["lgbm_0.txt"]
        assert re.search(old, text), old
        lines = re.sub(old, new, text, count=1).split("\n")  # without tree_sizes (optional), which the change breaks
        r.texts["lgbm_0.txt"] = "\n".join(line for line in lines if not line.startswith("tree_sizes="))
    return change


F32 = np.float32
#: (case, base run, change, what the one-line refusal must say)
CASES = [
    ("hidden abc", "bt", _set("train.hidden", "abc"), "train.hidden is \"abc\""),
    ("hidden -5", "bt", _set("train.hidden", [-5]), "train.hidden is [-5]"),
    ("hidden 1e9", "bt", _set("train.hidden", [1e9]), "train.hidden is [1000000000.0]"),
    ("hidden 64,500000", "bt", _set("train.hidden", [64, 500000]),
     "the config implies 66004226 weights (264016912 bytes)"),
    ("unknown training key", "bt", _set("train.evil", 1), "train.evil is not a training setting"),
    ("lr NaN", "bt", _set("train.lr", float("nan")), "train.lr is nan"),
    ("ensemble 0", "bt", _set("train.ensemble", 0), "train.ensemble is 0"),
    ("dim as text", "bt", _set("dim", "32"), "dim is \"32\""),
    ("unknown log key", "bt", _set("log", {"evil": 1}), "log.evil is not a training log field"),
    ("w1 of another shape", "bt", _tensor("w1", np.ones((2, 4, 2), F32)),
     "tensor w1 of weights.safetensors is F32 [2, 4, 2]; the config implies F32 [2, 4, 1]"),
    ("w1 broadcast (1, 1, 1)", "bt", _tensor("w1", np.ones((1, 1, 1), F32)), "tensor w1 of weights.safetensors is F32 "
                                                                               "[1, 1, 1]; the config implies"),
    ("w0 broadcast (3, 32, 1)", "bt", _tensor("w0", np.ones((3, DIM, 1), F32)), "the config implies 274 weights"),
    ("no w1", "bt", _tensor("w1", KeyError), "weights.safetensors has no tensor w1"),
    ("no b0", "bt", _tensor("b0", KeyError), "weights.safetensors has no tensor b0"),
    ("an extra tensor", "bt", _tensor("w9", np.ones(3, F32)), "holds tensor 'w9', which the config does not imply"),
    ("float16 weights", "bt", _tensor("w1", lambda a: np.ones((2, 4, 1), np.float16)), "is F16 [2, 4, 1]"),
    ("NaN weight", "bt", _poke("w0", float("nan")), "tensor w0 of weights.safetensors holds NaN or infinite"),
    ("inf weight", "bt", _poke("b1", float("inf")), "tensor b1 of weights.safetensors holds NaN or infinite"),
    ("std 0", "logreg", _poke("std", 0.0), "has a std of 0; every std must be > 0"),
    ("std NaN", "logreg", _poke("std", float("nan")), "tensor std of standardize.safetensors holds NaN"),
    ("standardised without statistics", "logreg", lambda r: setattr(r, "stats", None),
     "train.standardize is true, and the run has no standardize.safetensors"),
    ("junk LightGBM text", "lgbm", lambda r: r.texts.update({"lgbm_0.txt": "junk\n" * 50}),
     "lgbm_0.txt is not a LightGBM model text"),
    ("LightGBM feature out of range", "lgbm", _lgbm(r"split_feature=\d+", "split_feature=999"),
     "a split_feature is outside 0..31"),
    ("LightGBM of another dim", "lgbm", _lgbm(f"max_feature_idx={DIM - 1}", "max_feature_idx=3"),
     "has max_feature_idx=3; a run of dim 32 needs max_feature_idx=31"),
    ("LightGBM child out of range", "lgbm", _lgbm(r"right_child=-?\d+", "right_child=-99"),
     "right_child points outside"),
    ("a second LightGBM member", "lgbm", lambda r: r.texts.update({"lgbm_1.txt": r.texts["lgbm_0.txt"]}),
     "lgbm_1.txt is not one of them"),
]
S3_CASES = ("hidden 64,500000", "w1 broadcast (1, 1, 1)", "NaN weight", "junk LightGBM text", "unknown training key")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model):
    """A server with a small upload limit and short body timeouts, and the fingerprint of
    its embeddings (what a run must have been trained on to be servable)."""
    d = tmp_path_factory.mktemp("hostile")
    s = Server(tiny_model, d / "store", "--max-upload-bytes", str(LIMIT), "--body-idle-timeout", "1",
               "--body-timeout", "3", "--header-timeout", "2")
    info = json.loads(s.get("/v1/info")[1])
    s.fp = {"model_hash": info["model_hash"], "layer": info["layers"][0], "dim": info["dim"]}
    assert s.fp["dim"] == DIM
    s.bases = {"bt": bt_run(s.fp), "logreg": logreg_run(s.fp), "lgbm": lgbm_run(s.fp)}
    s.dir = d
    yield s
    s.stop()


def _hostile(served, case) -> Run:
    _, base, change, _ = case
    r = served.bases[base].copy()
    change(r)
    return r


def _versions(store) -> dict[str, int]:
    st = open_store(store)
    return {n: st.tables.get(n).version for n in sorted(st.tables.names())}


def _settled(store) -> dict[str, int]:
    """The versions once the service's committer has written what earlier requests
    computed (it commits every 0.2 s): two looks half a second apart agree."""
    last, deadline = _versions(store), time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _versions(store)
        if now == last:
            return now
        last = now
    return last


def _rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) << 10


def _one_line(res, msg: str) -> None:
    assert res.exit_code == 2 and res.output.startswith("error: ") and res.output.count("\n") == 1, res.output
    assert msg in res.output and "Traceback" not in res.output, res.output


def test_every_base_run_passes_the_check_loads_and_scores(served, tmp_path):
    from embrm.rm.run import load_run

    x = np.random.default_rng(0).standard_normal((5, DIM)).astype(np.float32)
    for name, r in served.bases.items():
        model, cfg = load_run(r.write(tmp_path / name))
        assert np.isfinite(model.score(x)).all() and cfg["train"]["method"] == r.cfg["train"]["method"]
    bt = served.bases["bt"]  # the plain forward pass of the weights, in numpy
    h = np.maximum(np.einsum("nd,mdh->mnh", x, bt.tensors["w0"]) + bt.tensors["b0"], 0)
    want = (np.einsum("mnh,mho->mno", h, bt.tensors["w1"]) + bt.tensors["b1"])[..., 0]
    np.testing.assert_allclose(load_run(tmp_path / "bt")[0].score(x), want, rtol=1e-5, atol=1e-6)


def test_the_train_section_schema_is_the_trainers_config():
    from embrm.rm.trainer import TrainConfig, TrainLog
    from embrm.runcheck import LOG, TRAIN
    from embrm.runshapes import DEFAULT_HIDDEN

    assert set(TRAIN) == set(TrainConfig.__dataclass_fields__) and set(LOG) == set(TrainLog.__dataclass_fields__)
    assert TrainConfig().hidden == DEFAULT_HIDDEN


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_hostile_run_is_refused_in_one_line_everywhere(served, case, tmp_path):
    """The check itself, `rm push` to a local store and to the service: one line naming
    the field and the expected value; nothing written anywhere."""
    r = _hostile(served, case)
    with pytest.raises(EmbrmError) as e:
        runformat.check_files(r.files(), "run x")
    assert case[3] in str(e.value) and "\n" not in str(e.value), str(e.value)
    run = r.write(tmp_path / "run")
    local = tmp_path / "store"
    open_store(local, create=True)
    before = _versions(local)
    _one_line(CliRunner().invoke(cli, ["rm", "push", str(run), "--name", "x", "--store", str(local)]), case[3])
    assert _versions(local) == before
    before = _versions(served.store)
    status, raw, _ = http("PUT", served.url + "/v1/rms/x", run_files_ipc(r.files()), ARROW)
    err = json.loads(raw)["error"]
    assert status == 400 and err["code"] == "invalid_run" and case[3] in err["message"], (status, err)
    assert "\n" not in err["message"] and _versions(served.store) == before


def test_hostile_pushes_leave_the_services_memory_where_it_was(served):
    http("PUT", served.url + "/v1/rms/warm", run_files_ipc(_hostile(served, CASES[3]).files()), ARROW)
    before = _rss(served.proc.pid)
    for case in CASES:
        status, _, _ = http("PUT", served.url + "/v1/rms/x", run_files_ipc(_hostile(served, case).files()), ARROW)
        assert status == 400
    after = _rss(served.proc.pid)
    assert after - before < 50 << 20, (before >> 20, after >> 20)


def test_hostile_runs_on_s3_are_refused_and_a_new_prefix_becomes_a_store(served, s3, tmp_path):
    r = CliRunner()
    good = served.bases["bt"].write(tmp_path / "good")
    res = r.invoke(cli, ["rm", "push", str(good), "--name", "first", "--store", s3.uri])  # no store there yet
    assert res.exit_code == 0 and "pushed first (bt x2" in res.output, res.output
    before = _versions(s3.uri)
    for case in [c for c in CASES if c[0] in S3_CASES]:
        run = _hostile(served, case).write(tmp_path / case[0].replace(" ", "-"))
        _one_line(r.invoke(cli, ["rm", "push", str(run), "--name", "x", "--store", s3.uri]), case[3])
    assert _versions(s3.uri) == before
    res = r.invoke(cli, ["rm", "ls", "--store", s3.uri])
    assert res.exit_code == 0 and "first" in res.output and " x " not in res.output


def test_rm_push_creates_a_local_store_but_not_for_a_refused_run(served, tmp_path):
    r = CliRunner()
    bad = _hostile(served, CASES[0]).write(tmp_path / "bad")
    _one_line(r.invoke(cli, ["rm", "push", str(bad), "--name", "x", "--store", str(tmp_path / "new")]), "train.hidden")
    assert not (tmp_path / "new").exists()
    good = served.bases["logreg"].write(tmp_path / "good")
    res = r.invoke(cli, ["rm", "push", str(good), "--name", "g", "--store", str(tmp_path / "new")])
    assert res.exit_code == 0, res.output
    assert [d["name"] for d in open_store(tmp_path / "new").runs()] == ["g"]


def test_serve_rm_refuses_a_hostile_run_at_start(served, tiny_model, tmp_path):
    for case in (CASES[3], CASES[10]):
        run = _hostile(served, case).write(tmp_path / case[0].replace(" ", "-"))
        res = CliRunner().invoke(cli, ["serve", "--model", str(tiny_model), "--dtype", "float32", "--store",
                                       str(tmp_path / "s"), "--rm", f"x={run}", "--port", "0"])
        _one_line(res, case[3])


def test_a_hostile_run_already_in_a_store_is_a_400_not_a_500(served):
    """A run published by an embrm from before the check (written here past it): asked
    for, it is refused as not servable, and listed with the reason."""
    from embrm.store.registry import TABLE, _row
    from embrm.store.tables import merge

    st = open_store(served.store)
    r = _hostile(served, CASES[10])  # w1 (1, 1, 1): was served with wrong rewards
    summary = runformat.summary("old-bad", r.cfg, None)
    st.tables.create(TABLE, __import__("embrm.store.registry", fromlist=["SCHEMA"]).SCHEMA)
    merge(st.tables.get(TABLE), "name", _row("old-bad", json.dumps(summary), "2020-01-01T00:00:00Z", r.files()),
          update=True)
    deadline = time.monotonic() + 20
    status, out = 404, {}
    while time.monotonic() < deadline and status == 404:
        status, out = served.post("/v1/rewards", {"rm": "old-bad", "items": [{"prompt": "p", "response": "r"}]})
        time.sleep(0.3)
    assert status == 400 and out["error"]["code"] == "rm_not_servable" and "tensor w1" in out["error"]["message"], out
    listed = {d["name"]: d for d in json.loads(served.get("/v1/rms")[1])["data"]}
    assert listed["old-bad"]["servable"] is False and "tensor w1" in listed["old-bad"]["problem"]


def _push_ok(served, name: str, r: Run) -> None:
    status, raw, _ = http("PUT", f"{served.url}/v1/rms/{name}?force=true", run_files_ipc(r.files()), ARROW)
    assert status == 201, raw
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if name in {d["name"] for d in json.loads(served.get("/v1/rms")[1])["data"]}:
            return
        time.sleep(0.3)
    raise AssertionError(f"{name} never listed")


def test_rewards_are_finite_or_refused_naming_the_item_and_coefficient(served):
    _push_ok(served, "loud", bt_run(served.fp, scale=1e18))  # finite weights, member scores ~1e18 apart
    over = bt_run(served.fp)  # finite weights whose scores overflow float32: h >= 10, w1 = b1 = 3e38
    over.tensors["b0"][-1], over.tensors["w1"][-1], over.tensors["b1"][-1] = 10.0, 3e38, 3e38
    _push_ok(served, "overflowing", over)
    items = [{"prompt": "p", "response": "fine"}, {"prompt": "q", "response": "also fine"}]
    status, out = served.post("/v1/rewards", {"rm": "loud", "items": items, "aggregation": "mean-var"})
    assert status == 200 and all(math.isfinite(d["reward"]) for d in out["data"]), out
    for route, body in [("/v1/rewards", {"rm": "loud", "items": items, "aggregation": "mean-var", "lambda": 1e6}),
                        ("/get_reward?rm=loud&aggregation=mean-var&lambda=1000000",
                         {"query": ["pfine", "qalso fine"], "prompts": ["p", "q"]})]:
        status, out = served.post(route, body)
        err = out["error"]
        assert status == 400 and err["param"] == "lambda" and err["code"] == "non_finite_reward", out
        assert "item 0: the mean-var reward overflows float32" in err["message"] and "with lambda 1e+06" in \
            err["message"]
    for route, body, param in [("/v1/rewards", {"items": items, "aggregation": "mean-var", "lambda": 1e39}, "lambda"),
                               ("/v1/rewards", {"items": items, "aggregation": "mean-std", "beta": 1e300}, "beta"),
                               ("/get_reward?aggregation=mean-var&lambda=1e39", {"query": ["pa"], "prompts": ["p"]},
                                "lambda")]:
        status, out = served.post(route, body)
        assert status == 400 and out["error"]["param"].endswith(param) and "1000000" in out["error"]["message"], out
    for route, body in [("/v1/rewards", {"rm": "overflowing", "items": items}),
                        ("/get_reward?rm=overflowing", {"query": ["pfine", "qalso fine"], "prompts": ["p", "q"]}),
                        ("/v1/rerank", {"model": "overflowing", "query": "p", "documents": ["fine", "also fine"]})]:
        status, out = served.post(route, body)
        assert status == 400 and out["error"]["code"] == "non_finite_reward", (route, out)
        assert "item 0: the reward model's members score it" in out["error"]["message"], out


# ---------------------------------------------------------------- uploads
def _chunked(port: int, path: str, total: int, stall_after: int | None = None) -> tuple[int, bytes, float]:
    """PUT a chunked junk body of up to ``total`` bytes (or ``stall_after`` bytes, then
    nothing) until the server answers; (bytes sent, the answer's start, seconds)."""
    head = (f"PUT {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: {ARROW['Content-Type']}\r\n\r\n")
    piece = b"\xff" * (64 << 10)
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    sent, got = 0, b""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        t0 = time.monotonic()
        sock.sendall(head.encode())
        while time.monotonic() - t0 < 30:
            if select.select([sock], [], [], 0 if stall_after is None or sent < stall_after else 0.2)[0]:
                break
            if stall_after is not None and sent >= stall_after:
                continue
            if sent >= total:
                break
            try:
                sock.sendall(chunk[: 1000 + 8] if stall_after is not None else chunk)
            except OSError:
                break
            sent += 1000 if stall_after is not None else len(piece)
        try:
            got = sock.recv(200)
        except OSError:
            got = b"reset"
        return sent, got, time.monotonic() - t0


def test_the_rm_upload_route_is_under_the_upload_limit_and_the_body_timeouts(served):
    port = int(served.url.rsplit(":", 1)[1])
    before, rss = _settled(served.store), _rss(served.proc.pid)
    sent, got, _ = _chunked(port, "/v1/rms/big", 400 << 20)
    assert got.startswith(b"HTTP/1.1 413") and sent < LIMIT + (16 << 20), (sent, got)
    sent, got, seconds = _chunked(port, "/v1/rms/slow", 1 << 20, stall_after=1000)
    assert got.startswith(b"HTTP/1.1 408") and seconds < 3, (got, seconds)
    big = bt_run(served.fp, hidden=(16000,))  # a valid run of 4 MB, over the 2 MB limit
    status, raw, _ = http("PUT", served.url + "/v1/rms/big", run_files_ipc(big.files()), ARROW)
    assert status == 413 and json.loads(raw)["error"]["code"] == "body_too_large"
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        t0 = time.monotonic()
        sock.sendall(b"PUT /v1/rms/x HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n" + b"y" * 1000)
        assert sock.recv(300).startswith(b"HTTP/1.1 413") and time.monotonic() - t0 < 5
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:  # headers that never end
        t0 = time.monotonic()
        sock.sendall(b"PUT /v1/rms/x HTTP/1.1\r\nHost: x\r\n")
        try:
            closed = sock.recv(100) == b""
        except OSError:
            closed = True
        assert closed and time.monotonic() - t0 < 5
    assert _versions(served.store) == before and _rss(served.proc.pid) - rss < 50 << 20
    status, _ = served.post("/v1/rewards", {"rm": "nope", "items": [{"prompt": "p", "response": "r"}]})
    assert status == 404  # still serving


# ---------------------------------------------------------------- the CLI
def _dying_server(answer: bytes) -> tuple[str, threading.Thread]:
    """A loopback server that reads one request whole, then sends ``answer`` and closes:
    a server that died after its commit, mid-answer."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(20)

    def serve() -> None:
        with srv:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(20)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, body = data.split(b"\r\n\r\n", 1)
                length = int(next(h.split(b":")[1] for h in head.split(b"\r\n")
                                  if h.lower().startswith(b"content-length")))
                while len(body) < length:
                    body += conn.recv(65536)
                conn.sendall(answer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return f"http://127.0.0.1:{srv.getsockname()[1]}", t


def test_a_push_whose_server_dies_after_the_commit_says_so_and_a_rerun_is_safe(served, tmp_path):
    run = served.bases["bt"].write(tmp_path / "run")
    for answer, msg in [(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"na",
                         "closed the connection before its answer to the push of x was complete (IncompleteRead); "
                         "the run may or may not be published"),
                        (b"", "closed the connection without answering PUT /v1/rms/x")]:
        url, t = _dying_server(answer)
        _one_line(CliRunner().invoke(cli, ["rm", "push", str(run), "--name", "x", "--store", url]), msg)
        t.join(20)
    r = CliRunner()
    assert r.invoke(cli, ["rm", "push", str(run), "--name", "rerun", "--store", served.url]).exit_code == 0
    _one_line(r.invoke(cli, ["rm", "push", str(run), "--name", "rerun", "--store", served.url]), "already published")


def test_rm_pull_into_a_path_it_cannot_write_is_one_line(served, tmp_path):
    store = tmp_path / "store"
    r = CliRunner()
    run = served.bases["bt"].write(tmp_path / "run")
    assert r.invoke(cli, ["rm", "push", str(run), "--name", "x", "--store", str(store)]).exit_code == 0
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file" / "run", Path("/proc/embrm-run"), Path("/proc/self/x/y")):
        _one_line(r.invoke(cli, ["rm", "pull", "x", "--out", str(out), "--store", str(store)]), "cannot write the run")
    assert r.invoke(cli, ["rm", "pull", "x", "--out", str(tmp_path / "ok"), "--store", str(store)]).exit_code == 0


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A store with a pool that has texts, and a small trained bt run on it."""
    from test_active import _synthetic_entry

    d = tmp_path_factory.mktemp("pool")
    store = open_store(d / "store", create=True)
    _synthetic_entry(store, "a" * 64, "1" * 64)
    res = CliRunner().invoke(cli, ["train", "--model-key", "model-aa", "--dataset-key", "data-1111", "--method", "bt",
                                   "--hidden", "4", "--ensemble", "2", "--epochs", "2", "--bon", "1,2", "--out",
                                   str(d / "run"), "--store", str(d / "store")])
    assert res.exit_code == 0, res.output
    return d


def test_score_and_active_select_refuse_a_malformed_run_in_one_line(pool, tmp_path):
    from safetensors.numpy import load_file

    good = pool / "run"
    cfg = json.loads((good / "config.json").read_text())
    weights = load_file(str(good / "weights.safetensors"))
    bad_key = {**cfg, "train": {**cfg["train"], "evil": 1}}
    for name, c, w, msg in [("key", bad_key, weights, "train.evil is not a training setting"),
                            ("w1", cfg, {**weights, "w1": np.ones((1, 1, 1), np.float32)}, "tensor w1"),
                            ("huge", {**cfg, "train": {**cfg["train"], "hidden": [4, 500000]}}, weights,
                             "the config implies")]:
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text(json.dumps(c))
        (run / "weights.safetensors").write_bytes(save(w))
        s = ["--store", str(pool / "store")]
        _one_line(CliRunner().invoke(cli, ["score", str(run), "--dataset-key", "data-1111", "--out",
                                           str(tmp_path / f"{name}.parquet"), *s]), msg)
        _one_line(CliRunner().invoke(cli, ["active", "select", "--rm", str(run), "--model-key", "model-aa",
                                           "--dataset-key", "data-1111", "--budget", "3", "--out",
                                           str(tmp_path / f"{name}.jsonl"), *s]), msg)
        _one_line(CliRunner().invoke(cli, ["eval", str(run), "--dataset-key", "data-1111", *s]), msg)
        assert not list(tmp_path.glob(f"{name}.*"))


def test_active_select_exclude_needs_labelled_pairs(pool, tmp_path):
    s = ["active", "select", "--rule", "random", "--model-key", "model-aa", "--dataset-key", "data-1111", "--budget",
         "3", "--store", str(pool / "store")]
    r = CliRunner()
    res = r.invoke(cli, [*s, "--out", str(tmp_path / "first.jsonl")])
    assert res.exit_code == 0, res.output
    (tmp_path / "empty.jsonl").write_text("")
    _one_line(r.invoke(cli, [*s, "--out", str(tmp_path / "a.jsonl"), "--exclude", str(tmp_path / "empty.jsonl")]),
              "empty.jsonl holds no labelled pairs")
    _one_line(r.invoke(cli, [*s, "--out", str(tmp_path / "a.jsonl"), "--exclude", str(tmp_path / "first.jsonl")]),
              "first.jsonl record 0 (line 1): winner is '', not 'a' or 'b'")
    recs = [json.loads(line) for line in (tmp_path / "first.jsonl").read_text().splitlines()]
    recs[0]["winner"], recs[1]["winner"], recs[2]["winner"] = "a", "B", "maybe"
    (tmp_path / "some.jsonl").write_text("".join(json.dumps(x) + "\n" for x in recs))
    _one_line(r.invoke(cli, [*s, "--out", str(tmp_path / "a.jsonl"), "--exclude", str(tmp_path / "some.jsonl")]),
              "record 2 (line 3): winner is 'maybe'")
    (tmp_path / "some.jsonl").write_text("".join(json.dumps(x) + "\n" for x in recs[:2]))
    res = r.invoke(cli, [*s, "--out", str(tmp_path / "a.jsonl"), "--exclude", str(tmp_path / "some.jsonl")])
    assert res.exit_code == 0 and "2 labelled pairs excluded" in res.output, res.output
    assert not (tmp_path / "first.jsonl").read_text() == (tmp_path / "a.jsonl").read_text()


# ------------------------------------------------------------------- fuzz
JUNK = [-1, 0, 1, 3, 2 ** 40, 1e300, -1e9, 1.5, float("nan"), float("inf"), "x", "", None, True, [], {}, [3], [0],
        [2 ** 31], [1] * 20, {"a": 1}, "bt", "lgbm"]


def _mutant(served, rng) -> dict[str, bytes]:
    """A base run changed at random: a config value, a tensor's shape or values, its
    statistics, a LightGBM line, or the bytes of a file."""
    from embrm.runcheck import TRAIN

    r = served.bases[rng.choice(sorted(served.bases))].copy()
    kind = rng.randrange(6)
    if kind == 0:
        r.cfg["train"][rng.choice([*TRAIN, "evil"])] = rng.choice(JUNK)
    elif kind == 1:
        key = rng.choice(["dim", "layer", "run_format", "model_hash", "log", "train", "val_prompts", "embedding"])
        r.cfg[key] = rng.choice(JUNK)
    elif kind == 2 and r.tensors:
        name = rng.choice(sorted(r.tensors))
        shape = tuple(rng.choice([1, 2, 3, 4, DIM]) for _ in range(rng.randrange(0, 4)))
        r.tensors[rng.choice([name, "w7"])] = np.ones(shape, rng.choice([np.float32, np.float16, np.float64]))
    elif kind == 3 and (r.tensors or r.stats):
        src = r.stats if r.stats and rng.random() < 0.5 else r.tensors
        name = rng.choice(sorted(src))
        a = src[name].copy()
        a.reshape(-1)[rng.randrange(a.size)] = rng.choice([float("nan"), float("inf"), 0.0, -1.0, 3e38])
        src[name] = a
    elif kind == 4 and r.texts:
        lines = r.texts["lgbm_0.txt"].split("\n")
        i = rng.randrange(len(lines))
        lines[i] = rng.choice(["", "num_leaves=999999999", lines[i].split("=")[0] + "=" + " ".join(
            str(rng.choice([-5, 0, 7, 10 ** 9, "nan"])) for _ in range(rng.randrange(5)))])
        r.texts["lgbm_0.txt"] = "\n".join(lines)
    files = r.files()
    if kind == 5 or rng.random() < 0.2:  # the bytes of a file: cut, flipped, or a huge header length
        name = rng.choice(sorted(files))
        b = bytearray(files[name])
        how = rng.randrange(3)
        if how == 0:
            b = b[: rng.randrange(len(b) + 1)]
        elif how == 1:
            for _ in range(rng.randrange(1, 8)):
                if b:
                    b[rng.randrange(len(b))] = rng.randrange(256)
        else:
            b[:8] = (rng.choice([2 ** 63, 2 ** 40, 10 ** 6])).to_bytes(8, "little")
        files[name] = bytes(b)
    return files


def test_a_fuzz_of_run_directories_gets_refusals_never_crashes(served, tmp_path):
    """A few hundred mutated runs against the check (and, where it passes, the loader and
    the scorer), and a sample of them through the real service: one-line refusals or
    finite rewards, never another exception, a 5xx or memory growth."""
    import random

    from embrm.rm.metrics import finite_rewards
    from embrm.rm.run import load_run

    rng = random.Random(26)
    x = np.random.default_rng(0).standard_normal((4, DIM)).astype(np.float32)
    outcomes: dict[str, int] = {"refused": 0, "scored": 0, "refused at scoring": 0}
    sample, t0 = [], time.monotonic()
    for i in range(400):
        if time.monotonic() - t0 > 20:
            break
        files = _mutant(served, rng)
        if i % 12 == 0:
            sample.append(files)
        try:
            runformat.check_files(files, "fuzz")
        except EmbrmError as e:
            assert "\n" not in str(e)
            outcomes["refused"] += 1
            continue
        d = tmp_path / f"f{i}"
        d.mkdir()
        for n, b in files.items():
            (d / n).write_bytes(b)
        model, _ = load_run(d)
        try:
            finite_rewards(model.score(x), "mean-var", 1.0)
            outcomes["scored"] += 1
        except EmbrmError:
            outcomes["refused at scoring"] += 1
    assert sum(outcomes.values()) >= 200 and outcomes["refused"] >= 100 and outcomes["scored"] >= 10, outcomes
    for name, base in served.bases.items():  # warm up: a push, a load and a reward of each family
        _push_ok(served, f"warm-{name}", base)
        assert served.post("/v1/rewards", {"rm": f"warm-{name}", "items": [{"prompt": "p", "response": "r"}]})[0] == 200
    before = _rss(served.proc.pid)
    for i, files in enumerate(sample):
        status, raw, _ = http("PUT", f"{served.url}/v1/rms/fuzz-{i}", run_files_ipc(files), ARROW)
        assert status in (201, 400), raw[:300]
        if status == 201:
            status, out = served.post("/v1/rewards", {"rm": f"fuzz-{i}", "items": [{"prompt": "p", "response": "r"}]})
            assert status in (200, 400, 404), out  # 404: not listed yet
    after = _rss(served.proc.pid)
    print(f"fuzz: {outcomes}, {len(sample)} through the service, RSS {before >> 20} -> {after >> 20} MB")
    assert after - before < 50 << 20 and "Traceback" not in served.log(), (before >> 20, after >> 20)
