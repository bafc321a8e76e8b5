"""``embrm extract --engine ray``: a real local Ray (2 CPUs, 2 actors) started by real driver
processes, the tiny Llama, and checks that no Ray process of a test is left behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from embrm.cli import main as cli
from embrm.extractor import extract
from embrm.store import open_store
from embrm.store import schema as S

from conftest import extract_config

pytest.importorskip("ray")


def _session(sid: int) -> list[int]:
    """Live processes of session ``sid``: a driver started in a new session, and every Ray
    process it spawned (they keep its session, whatever their process titles say)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(d))
    return out


def _kill_session(sid: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while _session(sid) and time.monotonic() < deadline:
        for pid in _session(sid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def _driver(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "embrm.cli", "extract", "--engine", "ray", "--quiet", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(p: subprocess.Popen, timeout: float = 300) -> tuple[str, str]:
    try:
        out, err = p.communicate(timeout=timeout)
        deadline = time.monotonic() + 20  # Ray's helpers exit on their own after a clean shutdown
        while _session(p.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _session(p.pid)
        assert not left, f"Ray processes left behind: {left}"
        return out, err
    finally:
        _kill_session(p.pid)


def _rec(i: int, period: int = 120) -> dict:
    """Row i; rows repeat every ``period`` (prompt and response both)."""
    j = i % period
    return {"prompt": f"Question {j % 12}?", "response": f" answer {j}" * (1 + j % 3)}


def _data(path: Path, n: int, new: int = 0) -> Path:
    recs = [_rec(i) for i in range(n)] + [{"prompt": "Fresh?", "response": f" new {i}"} for i in range(new)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_ray_and_local_engines_agree_and_reuse_each_others_items(tmp_path, tiny_model, monkeypatch):
    data = _data(tmp_path / "a.jsonl", 240)  # half the rows repeat an item: workers see each once
    model = ["--model", str(tiny_model), "--dtype", "float32", "--num-workers", "2", "--cpus-per-worker", "0.5"]
    out, err = _finish(_driver(["--dataset", str(data), "--store", str(tmp_path / "ray"), *model,
                                "--commit-rows", "50"]))
    assert "status complete" in out, err[-3000:]
    local = extract(extract_config(data, tiny_model, tmp_path / "local", dtype="float32", quiet=True))
    assert f"[{local.model_hash[:12]}]" in out and f"[{local.dataset_hash[:12]}]" in out
    assert f"computed {local.computed}" in out and f"duplicates {local.duplicates}" in out
    rs, ls = open_store(tmp_path / "ray"), open_store(tmp_path / "local")
    np.testing.assert_allclose(rs.load(local.model_hash, local.dataset_hash).vectors,
                               ls.load(local.model_hash, local.dataset_hash).vectors, atol=2e-5)
    keys = rs.vectors.cached(local.model_hash).to_pylist()
    assert len(keys) == len(set(keys)) == local.computed
    # items the ray engine stored are skipped by the local engine, and the other way round
    b = _data(tmp_path / "b.jsonl", 30, new=30)  # 30 rows the ray engine stored, 30 new ones
    r = extract(extract_config(b, tiny_model, tmp_path / "ray", dtype="float32", quiet=True))
    assert (r.cached, r.computed) == (30, 30)
    c = _data(tmp_path / "c.jsonl", 20, new=40)  # 20 rows the local engine stored, 20 of b's, 20 new
    out, err = _finish(_driver(["--dataset", str(c), "--store", str(tmp_path / "local"), *model]))
    assert "computed 40   cached 20" in out and "status complete" in out, out + err[-3000:]
    # everything cached: no Ray, no actor
    from embrm.extractor.engines import ray as engine

    def no_ray(*_a, **_k):
        raise AssertionError("Ray started although nothing was missing")

    monkeypatch.setattr(engine, "start_ray", no_ray)
    res = extract(extract_config(data, tiny_model, tmp_path / "ray", dtype="float32", quiet=True), engine="ray",
                  ray=engine.RayOptions(num_workers=2))
    assert (res.computed, res.status, res.model_loaded) == (0, "complete", False)


def _data_files(store: Path, model_hash: str) -> set[str]:
    return {p.name for p in (store / f"{S.vector_table(model_hash)}.lance" / "data").glob("*.lance")}


def test_sigkill_of_the_driver_then_a_rerun_has_every_item_once_and_gc_removes_orphans(tmp_path, tiny_model):
    # 1,320 distinct items; one worker, so results come one task (330 items) at a time: the
    # first commit follows the second result, and the third waits uncommitted for the fourth
    data = _data(tmp_path / "d.jsonl", 240, new=1200)
    store = tmp_path / "store"
    args = ["--dataset", str(data), "--store", str(store), "--model", str(tiny_model), "--dtype", "float32",
            "--num-workers", "1", "--commit-rows", "500", "--commit-seconds", "600"]
    p = _driver(args)
    deadline = time.monotonic() + 240
    mh = orphans = None
    try:
        while time.monotonic() < deadline and p.poll() is None:  # after the first commit, with fragments
            st = open_store(store) if (store / "embrm_meta.lance").exists() else None  # written but not yet
            entries = st.entries() if st else []                                        # committed: kill
            if entries and st.vectors.info(entries[0].model_hash) is not None:
                mh = entries[0].model_hash
                ds = st.tables.get(S.vector_table(mh))
                committed = {f.path for frag in ds.get_fragments() for f in frag.data_files()}
                if ds.count_rows() >= 500 and _data_files(store, mh) - committed:
                    os.killpg(p.pid, signal.SIGKILL)
                    orphans = _data_files(store, mh) - committed
                    break
            time.sleep(0.05)
    finally:
        _kill_session(p.pid)
        p.communicate()
    assert orphans, "the driver finished before it could be killed between commits"
    assert not _session(p.pid)
    st = open_store(store)
    e = st.entries()[0]
    assert e.status == "partial" and 500 <= st.tables.get(S.vector_table(mh)).count_rows() < 1320
    out, err = _finish(_driver(args))
    assert "status complete" in out, err[-3000:]
    st = open_store(store)
    keys = st.vectors.cached(mh).to_pylist()
    assert len(keys) == len(set(keys)) == 1320
    assert orphans <= _data_files(store, mh)  # still on disk after the rerun...
    st.gc()
    ds = st.tables.get(S.vector_table(mh))
    assert not orphans & _data_files(store, mh)  # ...and gone after gc
    assert _data_files(store, mh) == {f.path for frag in ds.get_fragments() for f in frag.data_files()}
    assert len(st.load(mh, e.dataset_hash)) == e.n_rows


def test_engine_mistakes_are_one_line_and_change_nothing(tmp_path, tiny_model, monkeypatch):
    data = _data(tmp_path / "d.jsonl", 20)
    store = tmp_path / "store"
    open_store(store, create=True)
    before = sorted(p.name for p in store.iterdir())
    r = CliRunner()
    base = ["extract", "--dataset", str(data), "--model", str(tiny_model), "--store", str(store), "--quiet"]
    for args, msg in [(["--engine", "nope"], "'--engine'"),
                      (["--num-workers", "2"], "--num-workers only apply with --engine ray")]:
        res = r.invoke(cli, [*base, *args])
        assert res.exit_code == 2 and res.output.count("\n") == 1 and msg in res.output, res.output
    res = subprocess.run([sys.executable, "-m", "embrm.cli", *base, "--engine", "ray", "--address", "127.0.0.1:9"],
                         capture_output=True, text=True, timeout=300, start_new_session=True)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0, res.stderr[-2000:]
    assert "cannot start or reach Ray at 127.0.0.1:9" in res.stderr
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray looks like
    res = r.invoke(cli, [*base, "--engine", "ray"])
    assert res.exit_code == 2 and "needs Ray Data: `pip install 'embrm[ray]'`" in res.output
    assert sorted(p.name for p in store.iterdir()) == before and open_store(store).entries() == []


def test_an_entry_streams_in_order_and_as_a_ray_dataset(tmp_path, tiny_model):
    data = _data(tmp_path / "d.jsonl", 90)
    r = extract(extract_config(data, tiny_model, tmp_path / "s", dtype="float32", quiet=True))
    store = open_store(tmp_path / "s")
    full = store.load(r.model_hash, r.dataset_hash)
    batches = list(store.iter_entry(r.model_hash, r.dataset_hash, batch_size=16))
    assert [len(b.vectors) for b in batches] == [16] * 5 + [10]
    np.testing.assert_array_equal(np.concatenate([b.vectors for b in batches]), full.vectors)
    part = list(store.iter_entry(r.model_hash, r.dataset_hash, batch_size=16, offset=30, limit=20))
    np.testing.assert_array_equal(np.concatenate([b.vectors for b in part]), full.vectors[30:50])
    code = f"""
import json, numpy as np
from embrm.extractor.engines.ray import RayOptions, start_ray
ray = start_ray(RayOptions())
try:
    from embrm.store.ray_data import ray_dataset
    ds = ray_dataset({str(tmp_path / "s")!r}, {r.model_hash!r}, {r.dataset_hash!r}, rows_per_task=25)
    t = ds.to_arrow_refs()
    import pyarrow as pa
    t = pa.concat_tables(ray.get(t)).sort_by("position")
    v = np.stack(t.column("vector").to_numpy(zero_copy_only=False))
    print(json.dumps({{"rows": len(t), "sum": float(v.sum())}}))
finally:
    ray.shutdown()
"""
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    out, err = _finish(p)
    got = json.loads(out.strip().splitlines()[-1])
    assert got["rows"] == 90 and got["sum"] == pytest.approx(float(full.vectors.sum()), rel=1e-5), err[-2000:]


def test_small_jobs_are_cut_into_enough_tasks_for_every_worker():
    from embrm.extractor.engines.ray import TASK_ROWS, task_rows

    assert task_rows(600, 2) == 75  # 8 tasks: neither of 2 workers waits on the other's third task
    assert task_rows(1_000_000, 8) == TASK_ROWS
    assert task_rows(10, 4) == 16
    for n, w in ((600, 2), (5000, 3), (17, 1)):
        size = task_rows(n, w)
        assert -(-n // size) >= min(4 * w, -(-n // 16))
