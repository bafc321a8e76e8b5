"""Hostile and careless input, against a real ``embrm serve`` process with a token on
loopback and against the CLI. Each case: a 4xx JSON answer (or one ``error:`` line and
exit 2), the server still up, every table version of the store unchanged, nothing
forged. Every request loop is bounded in count and time and goes to 127.0.0.1 only."""
from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from embrm.cli import main as cli
from embrm.store import open_store
from embrm.store import schema as S

from servers import Server, http

pytest.importorskip("fastapi")
TOKEN = "hardening-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PAIRS = [{"prompt": f"Question {i}?", "chosen": f" good answer {i}", "rejected": f" bad {i}"} for i in range(6)]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, tiny_model):
    """A server with a token, info logs, a small queue and short timeouts, holding one
    complete pairwise entry."""
    d = tmp_path_factory.mktemp("hardening")
    s = Server(tiny_model, d / "store", "--log-level", "info", "--max-queue", "16", "--header-timeout", "1",
               "--body-idle-timeout", "1", "--body-timeout", "4", env={"EMBRM_TOKEN": TOKEN})
    data = d / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    res = CliRunner().invoke(cli, ["extract", "--dataset", str(data), "--store", s.url, "--quiet"],
                             env={"EMBRM_TOKEN": TOKEN})
    assert res.exit_code == 0 and "status complete" in res.output, res.output
    [e] = [e for e in open_store(s.store).entries() if e.dataset_name == "pairs"]
    s.entry = e
    yield s
    s.stop()


def _versions(store: Path) -> dict[str, int]:
    st = open_store(store)
    return {n: st.tables.get(n).version for n in sorted(st.tables.names())}


def _post(s: Server, path: str, payload: object) -> tuple[int, dict]:
    status, body, _ = http("POST", s.url + path, json.dumps(payload).encode(),
                           {"Content-Type": "application/json", **AUTH})
    return status, json.loads(body)


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _rows(n: int = 4, **change) -> dict[str, list]:
    cols = {"prompt": [f"p{i // 2}" for i in range(n)], "response": [f"r{i}" for i in range(n)],
            "prompt_id": [i // 2 for i in range(n)], "response_index": [i % 2 for i in range(n)],
            "role": ["chosen" if i % 2 == 0 else "rejected" for i in range(n)], "label": [None] * n,
            "reward": [None] * n}
    cols.update(change)
    return cols


def _table(**change) -> pa.Table:
    cols = _rows(**change)
    return pa.table({k: pa.array(v, S.UPLOAD_SCHEMA.field(k).type) if k in S.UPLOAD_SCHEMA.names and not
                     isinstance(v, pa.Array) else v for k, v in cols.items()})


def _put(s: Server, body: bytes, query: str = "kind=pairwise") -> tuple[int, dict]:
    status, raw, _ = http("PUT", f"{s.url}/v1/datasets?{query}", body,
                          {"Content-Type": "application/vnd.apache.arrow.stream", **AUTH})
    return status, json.loads(raw)


def test_entries_cannot_be_forged_and_the_real_one_stays_reachable(guarded):
    e = guarded.entry
    before = _versions(guarded.store)
    prefix = e.dataset_hash[:24]
    for payload, code in [({"dataset": prefix + "' OR 1=1 --", "kind": "pairwise"}, 400),
                          ({"dataset": prefix + "/../../../etc", "kind": "multi"}, 400),
                          ({"dataset": prefix + "a" * 1_000_000}, 400),
                          ({"dataset": e.dataset_hash, "name": "evil\x00name"}, 400),
                          ({"dataset": e.dataset_hash, "name": "a/b"}, 400),
                          ({"dataset": e.dataset_hash, "kind": "multi"}, 400),
                          ({"dataset": "f" * 64, "kind": "pairwise"}, 404),
                          ({"dataset": "abc", "kind": "pairwise"}, 400)]:
        status, out = _post(guarded, "/v1/entries", payload)
        assert status == code and set(out["error"]) == {"message", "type", "param", "code"}, (payload, status, out)
    assert _versions(guarded.store) == before
    status, raw, _ = guarded.get(f"/v1/entries/{e.model_hash[:8]}/{e.dataset_hash[:8]}", AUTH)
    assert status == 200 and json.loads(raw)["entry"]["dataset_hash"] == e.dataset_hash
    status, out = _post(guarded, "/v1/entries", {"dataset": e.dataset_hash[:10]})  # a real prefix: the real entry
    assert status == 202 and out["entry"]["dataset_hash"] == e.dataset_hash


def test_a_rejected_upload_writes_nothing(guarded):
    before = _versions(guarded.store)
    status, out = _put(guarded, _ipc(_table()), "kind=pairwise&dataset_hash=" + "0" * 64)
    assert status == 400 and out["error"]["code"] == "hash_mismatch" and "nothing was stored" in out["error"]["message"]
    assert _versions(guarded.store) == before


def _bad_utf8() -> pa.Array:
    """A string column whose second value is not UTF-8 (built from buffers, unchecked)."""
    offsets = pa.array([0, 2, 4, 6, 8], pa.int32()).buffers()[1]
    return pa.Array.from_buffers(pa.string(), 4, [None, offsets, pa.py_buffer(b"r0\xff\xfer2r3")])


BAD_UPLOADS = [
    ("cut short", lambda: _ipc(_table())[:150], "cut short"),
    ("junk", lambda: b"\x00\x01 certainly not arrow " * 40, "not an Arrow IPC stream"),
    ("null prompt", lambda: _ipc(_table(prompt=["a", None, "b", "b"])), "row 1 has no prompt"),
    ("list prompt", lambda: _ipc(_table(prompt=pa.array([["a"], ["b"], ["c"], ["d"]]))), "column prompt holds"),
    ("invalid UTF-8", lambda: _ipc(_table(response=_bad_utf8())), "UTF-8"),
    ("nothing to embed", lambda: _ipc(_table(prompt=["", "p", "q", "q"], response=["", "r", "s", "t"])),
     "row 0 has neither prompt nor response"),
    ("null id", lambda: _ipc(_table(prompt_id=[0, None, 1, 1])), "row 1 has no prompt_id"),
    ("not pairs", lambda: _ipc(_table(role=["chosen", "chosen", "rejected", "chosen"])), "not a (chosen, rejected)"),
    ("odd rows", lambda: _ipc(pa.Table.from_pydict(_rows(3), schema=S.UPLOAD_SCHEMA)), "row 2 has no partner"),
    ("NaN reward", lambda: _ipc(_table(reward=[0.5, float("nan"), 1.0, 2.0])), "row 1 has reward nan"),
    ("missing column", lambda: _ipc(_table().drop_columns(["role"])), "lack the column(s) ['role']"),
]


@pytest.mark.parametrize("what,body,message", BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS])
def test_every_bad_upload_is_a_400_naming_the_problem(guarded, what, body, message):
    before = _versions(guarded.store)
    status, out = _put(guarded, body())
    assert status == 400 and out["error"]["code"] == "invalid_rows" and message in out["error"]["message"], out
    assert out["error"]["message"].count("\n") == 0
    assert _versions(guarded.store) == before and guarded.get("/health")[0] == 200


def test_pairs_split_across_record_batches_are_checked_as_pairs(guarded):
    sink = pa.BufferOutputStream()
    table = _table(**{k: v * 3 for k, v in _rows(4).items()})  # 12 rows, 6 pairs
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table, max_chunksize=3)  # batches of 3: pairs split across batches
    status, out = _put(guarded, sink.getvalue().to_pybytes(), "kind=pairwise&name=split-pairs")
    assert status == 200 and out["rows"] == 12, out
    bad = _table(**{k: v * 3 for k, v in _rows(4).items()}).to_pydict()
    bad["role"][9] = "chosen"  # the fifth pair (rows 8, 9), split across the third and fourth batch: two chosen
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(pa.table(bad, schema=table.schema), max_chunksize=3)
    status, out = _put(guarded, sink.getvalue().to_pybytes())
    assert status == 400 and "rows 8 and 9 are not a (chosen, rejected) pair" in out["error"]["message"], out


def test_broken_arrow_streams_never_get_a_server_error(guarded):
    """Property-based: a valid upload cut, flipped, spliced or retyped at random."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    good = _ipc(_table())
    retyped = [_ipc(_table(**{c: pa.array([1.5, 2.5, 3.5, 4.5])})) for c in ("prompt", "prompt_id", "role")]
    results = []

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(base=st.sampled_from([good, *retyped]), cut=st.integers(0, len(good)),
           flips=st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)), max_size=6),
           junk=st.binary(max_size=64))
    def check(base, cut, flips, junk):
        b = bytearray(base[:cut])
        for i, v in flips:
            if i < len(b):
                b[i] = v
        status, raw, _ = http("PUT", f"{guarded.url}/v1/datasets?kind=pairwise", bytes(b) + junk,
                              {"Content-Type": "application/vnd.apache.arrow.stream", **AUTH})
        results.append(status)
        assert status < 500, raw[:300]
        assert status == 200 or set(json.loads(raw)["error"]) == {"message", "type", "param", "code"}

    check()
    assert len(results) == 60 and guarded.get("/health")[0] == 200


def test_a_request_larger_than_the_queue_is_413_not_a_429_for_ever(guarded):
    status, out = _post(guarded, "/v1/embeddings", {"input": [f"text {i}" for i in range(17)]})
    assert status == 413 and out["error"]["code"] == "larger_than_queue"
    status, out = _post(guarded, "/v1/embeddings", {"input": [f"text {i}" for i in range(16)]})
    assert status == 200


def test_a_body_declared_far_over_the_limit_is_refused_before_it_is_read(guarded):
    port = int(guarded.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        t0 = time.monotonic()
        sock.sendall(b"PUT /v1/datasets?kind=pairwise HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                     + b"\r\nContent-Length: 10000000000\r\n\r\n" + b"y" * 1000)
        got = sock.recv(300)
        assert got.startswith(b"HTTP/1.1 413") and time.monotonic() - t0 < 5, got
        assert b"connection: close" in got.lower()


def test_logs_escape_what_users_control_and_record_refusals(guarded):
    http("GET", guarded.url + "/v1/entries/%0Aforged%20line%20INFO/x%00y", None, AUTH)
    http("GET", guarded.url + "/v1/entries", None, {"Authorization": "Bearer not-the-token-at-all"})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "401 GET /v1/entries from 127.0.0.1" not in guarded.log():
        time.sleep(0.1)
    log = guarded.log()
    assert "401 GET /v1/entries from 127.0.0.1:" in log and TOKEN not in log and "not-the-token" not in log
    assert "\\u000aforged line INFO/x\\u0000y" in log
    assert not any(line.startswith("forged") for line in log.splitlines()) and "\x00" not in log


def test_the_bearer_scheme_is_case_insensitive_and_the_body_needs_json(guarded):
    status, _, _ = http("GET", guarded.url + "/v1/info", None, {"Authorization": f"bearer {TOKEN}"})
    assert status == 200
    status, raw, _ = http("POST", guarded.url + "/v1/embeddings", b'{"input": "x"}', AUTH)  # no Content-Type
    err = json.loads(raw)["error"]
    assert status == 400 and "Content-Type: application/json" in err["message"], err


def _slow(port: int, fast: bytes, head: bytes, every: float, stop: threading.Event, closed: list) -> None:
    """Send ``fast`` at once, then ``head`` a byte at a time, until the server answers or
    closes the connection; record how long that took and what the server said."""
    import select

    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        t0 = time.monotonic()
        got = b""
        try:
            sock.sendall(fast)
            for i in range(len(head)):
                if stop.is_set() or time.monotonic() - t0 > 20:
                    break
                if select.select([sock], [], [], every)[0]:  # the server spoke (an answer, or a close)
                    break
                sock.sendall(head[i:i + 1])
            sock.settimeout(15)
            got = sock.recv(200)
        except OSError:
            got = got or b"reset"
        closed.append((time.monotonic() - t0, got[:40]))


def test_slow_clients_are_dropped_and_others_still_served(guarded):
    port = int(guarded.url.rsplit(":", 1)[1])
    slow_header = b"GET /v1/info HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"
    body_head = (b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer "
                 + TOKEN.encode() + b"\r\nContent-Length: 200\r\n\r\n{\"input\": \"")
    stop, closed = threading.Event(), []
    threads = [threading.Thread(target=_slow, args=(port, b"", slow_header, 0.3, stop, closed)) for _ in range(20)]
    threads += [threading.Thread(target=_slow, args=(port, body_head, b"x" * 150, 2.5, stop, closed))
                for _ in range(20)]
    for t in threads:
        t.start()
    time.sleep(1)
    assert guarded.get("/health")[0] == 200  # the others are still served meanwhile
    for t in threads:
        t.join(30)
    stop.set()
    assert len(closed) == 40, closed
    assert all(t < 12 for t, _ in closed), sorted(t for t, _ in closed)[-3:]
    assert sum(b"408" in got for _, got in closed) >= 15  # slow bodies get a 408 before the close


def test_token_files_refuse_repeated_and_reserved_names(tmp_path):
    for text, msg in [("a:" + "x" * 20 + "\na:" + "y" * 20 + "\n", "'a' is given twice"),
                      ("env:" + "x" * 20 + "\n", "'env' is reserved"), ("bad name:" + "x" * 20 + "\n", "name is 1-64")]:
        f = tmp_path / "tokens"
        f.write_text(text)
        res = CliRunner().invoke(cli, ["serve", "--token-file", str(f), "--store", str(tmp_path / "s")])
        assert res.exit_code == 2 and msg in res.output and res.output.count("\n") == 1, res.output
    assert not (tmp_path / "s").exists()


def test_the_cli_checks_outputs_first_and_reads_bad_files_in_one_line(tmp_path):
    from test_rm import _multi_store  # a small real entry with golden rewards

    store = tmp_path / "store"
    _multi_store(store)
    r = CliRunner()
    (tmp_path / "file").write_text("x")
    for out in ("/proc/x.npy", str(tmp_path / "file" / "x.npy"), "/sys/x.npy", str(tmp_path)):
        res = r.invoke(cli, ["store", "export", "synthetic-model", "synthetic-data", "--out", out, "--store",
                             str(store)])
        assert res.exit_code == 2 and res.output.startswith("error: ") and res.output.count("\n") == 1, res.output
    ok = tmp_path / "x.npy"
    assert r.invoke(cli, ["store", "export", "synthetic-model", "synthetic-data", "--out", str(ok), "--store",
                          str(store)]).exit_code == 0
    res = r.invoke(cli, ["store", "export", "synthetic-model", "synthetic-data", "--out", str(ok), "--store",
                         str(store)])
    assert res.exit_code == 2 and "exists; pass --force" in res.output
    assert r.invoke(cli, ["store", "export", "synthetic-model", "synthetic-data", "--out", str(ok), "--force",
                          "--store", str(store)]).exit_code == 0
    t0 = time.monotonic()
    res = r.invoke(cli, ["train", "--model-key", "synthetic-model", "--dataset-key", "synthetic-data", "--out",
                         "/sys/run", "--store", str(store)])
    assert res.exit_code == 2 and "cannot write the run" in res.output and time.monotonic() - t0 < 5, res.output
    for args, msg in [(["--pairs-per-prompt", "0"], "--pairs-per-prompt"), (["--annotation-quality", "nan"],
                                                                            "not a finite number")]:
        res = r.invoke(cli, ["train", "--model-key", "synthetic-model", "--dataset-key", "synthetic-data", *args,
                             "--store", str(store)])
        assert res.exit_code == 2 and msg in res.output and res.output.count("\n") == 1, res.output
    (tmp_path / "notgz.jsonl.gz").write_text('{"prompt": "a", "response": "b"}\n')
    (tmp_path / "utf16.jsonl").write_bytes('{"prompt": "a", "response": "b"}\n'.encode("utf-16"))
    (tmp_path / "lone.jsonl").write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a\\ud800", "response": "b"}\n')
    for name, msg in [("notgz.jsonl.gz", "notgz.jsonl.gz is not a whole gzip file"),
                      ("utf16.jsonl", "utf16.jsonl is not UTF-8 text: byte 0xff near line 1"),
                      ("lone.jsonl", "record 1: prompt is not valid Unicode (a lone surrogate)")]:
        res = r.invoke(cli, ["extract", "--dataset", str(tmp_path / name), "--store", str(tmp_path / "s2"),
                             "--quiet"])
        assert res.exit_code == 2 and msg in res.output and res.output.count("\n") == 1, res.output
        assert "Traceback" not in res.output


def test_store_ls_escapes_control_characters_an_older_store_may_hold(tmp_path):
    from test_rm import _multi_store

    from embrm.store.tables import merge

    store = tmp_path / "store"
    _multi_store(store)
    st = open_store(store)
    row = st.catalog.row("m" * 64, "d" * 64)
    row.update(dataset_name="line\nbreak\x00nul")  # as an embrm before these checks could have written
    merge(st.tables.get(S.CATALOG_TABLE), "entry_id", pa.Table.from_pylist([row], schema=S.CATALOG_SCHEMA),
          update=True)
    res = CliRunner().invoke(cli, ["store", "ls", "--store", str(store)])
    assert res.exit_code == 0 and "line\\u000abreak\\u0000nul" in res.output and "\x00" not in res.output


def test_concurrent_extractions_share_the_work(tmp_path, tiny_model):
    """Three processes on the same data: every item computed once in all, no duplicates.

    How the 240 items split depends on when each process gets going (one that starts
    late may find everything done), so only the total is asserted."""
    import subprocess
    import sys

    recs = [{"prompt": f"Q{i % 30}?", "response": f" answer {i} " * (1 + i % 4)} for i in range(240)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    args = [sys.executable, "-m", "embrm.cli", "extract", "--dataset", str(data), "--model", str(tiny_model),
            "--dtype", "float32", "--store", str(tmp_path / "store"), "--window", "16", "--quiet"]
    open_store(tmp_path / "store", create=True)
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    computed = [int(o[0].split("computed ")[1].split()[0]) for o in outs]
    assert sum(computed) == 240, computed  # each item once, whoever computed it
    st = open_store(tmp_path / "store")
    [e] = st.entries()
    keys = st.vectors.cached(e.model_hash).to_pylist()
    assert len(keys) == len(set(keys)) == 240 and e.status == "complete"


@pytest.mark.parametrize("rounds", [5])
def test_creating_a_store_is_safe_under_concurrency_on_local_disk(tmp_path, rounds):
    import subprocess
    import sys

    code = "import sys; from embrm.store import open_store; open_store(sys.argv[1], create=True); print('ok')"
    for r in range(rounds):
        target = tmp_path / f"new-{r}"
        procs = [subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
        outs = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 and o[0].strip() == "ok" for p, o in zip(procs, outs)), [o[1][-300:] for o in outs]
        st = open_store(target)
        assert st.entries() == [] and st.tables.get(S.META_TABLE).count_rows() == 2


@pytest.mark.slow
def test_server_memory_stays_bounded_under_maximum_size_requests(tmp_path, tiny_model):
    """8 concurrent maximum-size requests (one 30 MB text each) and 4 concurrent
    maximum-size uploads: the server's resident memory ends under twice its idle size."""
    s = Server(tiny_model, tmp_path / "store", "--max-upload-bytes", str(64 << 20))
    try:
        s.post("/v1/embeddings", {"input": "warm up"})

        def rss() -> int:
            status = Path(f"/proc/{s.proc.pid}/status").read_text()
            return int(status.split("VmRSS:")[1].split()[0]) * 1024

        idle = rss()
        big = json.dumps({"input": "word " * (6 << 20)}).encode()  # 30 MB
        assert len(big) < 32 << 20
        results = []

        def call() -> None:
            results.append(http("POST", s.url + "/v1/embeddings", big, {"Content-Type": "application/json"})[0])

        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert results == [200] * 8
        row = {"prompt": "p" * 1000, "response": "r" * 1000, "prompt_id": 0, "response_index": 0, "role": "",
               "label": None, "reward": None}
        n = (60 << 20) // 2100
        body = _ipc(pa.Table.from_pylist([{**row, "prompt_id": i} for i in range(n)], schema=S.UPLOAD_SCHEMA))
        assert len(body) < 64 << 20
        ups = []

        def upload(i: int) -> None:
            ups.append(http("PUT", f"{s.url}/v1/datasets?kind=pointwise&name=big-{i}", body,
                            {"Content-Type": "application/vnd.apache.arrow.stream"})[0])

        threads = [threading.Thread(target=upload, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        assert ups == [200] * 4
        after = rss()
        peak = int(Path(f"/proc/{s.proc.pid}/status").read_text().split("VmHWM:")[1].split()[0]) * 1024
        print(f"server RSS idle {idle >> 20} MB, after {after >> 20} MB, peak {peak >> 20} MB")
        assert after < 2 * idle, (idle >> 20, after >> 20, peak >> 20)
    finally:
        s.stop()
