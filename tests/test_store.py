"""The LanceDB store: round trips, shared vectors, keys, bad input, crash and concurrency."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from embrm.cli import main as cli
from embrm.errors import EmbrmError
from embrm.store import DatasetHasher, ModelFingerprint, item_key, open_store
from embrm.store import schema as S
from embrm.store.maintenance import compact

from procs import kill_after

HERE = Path(__file__).parent
WRITER = HERE / "store_writer.py"


def _rows(prompts: list[str], k: int, rewards: np.ndarray | None = None, kind: str = "multi"):
    out = []
    for p_i, p in enumerate(prompts):
        for j in range(k):
            role = ("chosen" if j == 0 else "rejected") if kind == "pairwise" else ""
            out.append({"position": len(out), "item_key": item_key(p, f"{p}-resp{j}"), "prompt_id": p_i,
                        "response_index": j, "role": role, "label": None,
                        "reward": None if rewards is None else float(rewards[p_i, j]),
                        "prompt": p, "response": f"{p}-resp{j}"})
    return out


def _write(store, mh: str, dh: str, rows, vec_of, kind="multi", dtype="float32", layers=(-1,), name=None):
    store.rows.write(dh, rows, len(rows))
    store.begin_entry(mh, name or "model-x", {"pooling": "last"}, dh, f"data-{dh[:4]}", {"path": "x"}, kind, len(rows))
    keys = [r["item_key"] for r in rows]
    vecs = {layer: np.stack([vec_of(k, layer) for k in keys]) for layer in layers}
    store.writer.write(mh, keys, vecs, np.arange(len(keys)) + 1, np.zeros(len(keys), bool), dtype=dtype)
    return store.finish_entry(mh, dh)


def _vec(key: str, layer: int = -1, dim: int = 8) -> np.ndarray:
    rng = np.random.default_rng(abs(hash((key, layer))) % 2**32)
    return rng.standard_normal(dim).astype(np.float32)


def test_roundtrip_multi_shapes_and_rewards(store_path):
    store = open_store(store_path, create=True)
    rewards = np.arange(12, dtype=float).reshape(4, 3)
    rows = _rows([f"p{i}" for i in range(4)], 3, rewards)
    e = _write(store, "m" * 64, "d" * 64, rows, _vec, layers=(-1, 3))
    assert (e.status, e.rows, e.dim, e.dtype, e.layers) == ("complete", 12, 8, "float32", (-1, 3))
    emb = store.load("model-x", "d" * 64)
    want = np.stack([_vec(r["item_key"]) for r in rows])
    np.testing.assert_array_equal(emb.vectors, want)
    v, r = emb.multi()
    assert v.shape == (4, 3, 8) and r.shape == (4, 3)
    np.testing.assert_array_equal(r, rewards)
    np.testing.assert_array_equal(v[2, 1], _vec(rows[7]["item_key"]))
    l3 = store.load("model-x", "dddd", layer=3)
    np.testing.assert_array_equal(l3.vectors[5], _vec(rows[5]["item_key"], 3))
    np.testing.assert_array_equal(emb.n_tokens, np.arange(12) + 1)


def test_pairwise_shape_puts_chosen_first_and_float16(store_path):
    store = open_store(store_path, create=True)
    rows = _rows(["a", "b", "c"], 2, kind="pairwise")
    rows[0]["role"], rows[1]["role"] = "rejected", "chosen"  # chosen second in the file
    _write(store, "m" * 64, "d" * 64, rows, _vec, kind="pairwise", dtype="float16")
    emb = store.load("mmm", "ddd")
    assert emb.vectors.dtype == np.float16
    v, pids = emb.pairwise()
    assert v.shape == (3, 2, 8) and list(pids) == [0, 1, 2]
    np.testing.assert_allclose(v[0, 0], _vec(rows[1]["item_key"]).astype(np.float16))
    np.testing.assert_allclose(v[1, 0], _vec(rows[2]["item_key"]).astype(np.float16))


def test_vectors_are_shared_across_datasets(store_path):
    store = open_store(store_path, create=True)
    a = _rows(["p0", "p1", "p2"], 2)
    b = _rows(["p1", "p2", "p3"], 2)  # shares 4 items with a
    _write(store, "m" * 64, "a" * 64, a, _vec)
    calls = []
    keys_b = [r["item_key"] for r in b]
    have = set(store.vectors.cached("m" * 64).to_pylist())
    missing = [k for k in keys_b if k not in have]
    calls.append(len(missing))
    store.rows.write("b" * 64, b, len(b))
    store.begin_entry("m" * 64, "model-x", {}, "b" * 64, "data-b", {}, "multi", len(b))
    store.writer.write("m" * 64, missing, {-1: np.stack([_vec(k) for k in missing])},
                       np.ones(len(missing)), np.zeros(len(missing), bool))
    e = store.finish_entry("m" * 64, "b" * 64)
    assert calls == [2] and e.status == "complete" and e.rows == 6
    assert store.tables.get(S.vector_table("m" * 64)).count_rows() == 8
    np.testing.assert_array_equal(store.load("model-x", "data-b").vectors, np.stack([_vec(k) for k in keys_b]))
    # writing the same items again is a no-op, never a duplicate
    store.writer.write("m" * 64, keys_b, {-1: np.stack([_vec(k) for k in keys_b])}, np.ones(6), np.zeros(6, bool))
    assert store.tables.get(S.vector_table("m" * 64)).count_rows() == 8


def test_load_cache_follows_table_version(store_path, monkeypatch):
    monkeypatch.setenv("EMBRM_CACHE_SIZE", "1G")
    store = open_store(store_path, create=True)
    rows = _rows(["p0", "p1"], 2)
    keys = [r["item_key"] for r in rows]
    store.rows.write("d" * 64, rows, 4)
    store.begin_entry("m" * 64, "mx", {}, "d" * 64, "dx", {}, "multi", 4)
    store.writer.write("m" * 64, keys[:2], {-1: np.zeros((2, 8), np.float32)}, np.ones(2), np.zeros(2, bool))
    store.finish_entry("m" * 64, "d" * 64)
    with pytest.raises(EmbrmError, match="partial"):
        store.load("mx", "dx")
    part = store.load("mx", "dx", allow_partial=True)
    assert len(part) == 2 and list(part.response_index) == [0, 1]
    first = store.reader.cache_path(store.resolve("mx", "dx"), -1)
    assert first.exists()
    store.writer.write("m" * 64, keys[2:], {-1: np.ones((2, 8), np.float32)}, np.ones(2), np.zeros(2, bool))
    store.finish_entry("m" * 64, "d" * 64)
    full = store.load("mx", "dx", mmap=True)
    assert isinstance(full.vectors, np.memmap)
    np.testing.assert_array_equal(np.asarray(full.vectors)[:, 0], [0, 0, 1, 1])
    assert store.reader.cache_path(store.resolve("mx", "dx"), -1) != first and not first.exists()


def test_key_resolution_by_name_hash_and_prefix(store_path):
    store = open_store(store_path, create=True)
    _write(store, "ab" + "1" * 62, "cd" + "1" * 62, _rows(["x"], 2), _vec, name="model-one")
    _write(store, "ab" + "2" * 62, "cd" + "2" * 62, _rows(["y"], 2), _vec, name="model-two")
    assert store.resolve("model-one", "cd1").model_hash == "ab" + "1" * 62
    assert store.resolve("ab2", "cd" + "2" * 62).dataset_name == "data-cd22"
    with pytest.raises(EmbrmError, match="ambiguous"):
        store.resolve("ab", "cd1")
    with pytest.raises(EmbrmError, match="unknown model key 'zz'"):
        store.resolve("zz", "cd1")
    with pytest.raises(EmbrmError, match="unknown dataset key"):
        store.resolve("model-one", "ff")
    with pytest.raises(EmbrmError, match="no entry for model"):
        store.resolve("model-one", "cd2")


def _versions(store) -> dict[str, int]:
    return {n: store.tables.get(n).version for n in sorted(store.tables.names())}


def test_bad_writes_leave_the_store_as_it_was(store_path):
    store = open_store(store_path, create=True)
    rows = _rows(["p0", "p1"], 2)
    _write(store, "m" * 64, "d" * 64, rows, _vec)
    before = _versions(store)
    k = [item_key("new", "item")]
    with pytest.raises(EmbrmError, match="dim 4 but the table stores dim 8"):
        store.writer.write("m" * 64, k, {-1: np.zeros((1, 4), np.float32)}, [1], [False])
    with pytest.raises(EmbrmError, match="float16 but the table stores float32"):
        store.writer.write("m" * 64, k, {-1: np.zeros((1, 8), np.float16)}, [1], [False], dtype="float16")
    with pytest.raises(EmbrmError, match="layers"):
        store.writer.write("m" * 64, k, {-2: np.zeros((1, 8), np.float32)}, [1], [False])
    with pytest.raises(EmbrmError, match="NaN"):
        store.writer.write("m" * 64, k, {-1: np.full((1, 8), np.nan, np.float32)}, [1], [False])
    with pytest.raises(EmbrmError, match="layer 5 was not extracted.*stored layers: -1"):
        store.load("model-x", "dddd", layer=5)
    assert _versions(store) == before
    assert store.tables.get(S.vector_table("m" * 64)).count_rows() == 4


def test_opening_something_that_is_not_a_store(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hello")
    with pytest.raises(EmbrmError, match="is not an embrm store"):
        open_store(tmp_path / "other", create=True)
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["notes.txt"]
    with pytest.raises(EmbrmError, match="no embrm store at"):
        open_store(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(EmbrmError, match="is a file"):
        open_store(tmp_path / "file", create=True)
    import lancedb

    lancedb.connect(tmp_path / "lance").create_table("foreign", data=[{"a": 1}])
    with pytest.raises(EmbrmError, match="not an embrm store"):
        open_store(tmp_path / "lance", create=True)


def test_export_rm_gc(store_path, tmp_path, monkeypatch):
    monkeypatch.setenv("EMBRM_CACHE_SIZE", "1G")  # gc also clears the load cache's stale files
    store = open_store(store_path, create=True)
    a = _rows(["p0", "p1"], 2)
    b = _rows(["p1", "p9"], 2)
    _write(store, "m" * 64, "a" * 64, a, _vec)
    _write(store, "m" * 64, "b" * 64, b, _vec)
    store.load("model-x", "aaa")
    out = tmp_path / "x.npy"
    from embrm.store import export

    export(store, "model-x", "aaa", out)
    np.testing.assert_array_equal(np.load(out), np.stack([_vec(r["item_key"]) for r in a]))
    pq_path = export(store, "model-x", "bbb", tmp_path / "x.parquet")
    t = pq.read_table(pq_path)
    assert t.num_rows == 4 and t.schema.field("vector").type.list_size == 8
    with pytest.raises(EmbrmError, match=".npy or .parquet"):
        export(store, "model-x", "bbb", tmp_path / "x.csv")
    store.delete("model-x", "aaa")
    res = store.gc()
    assert res["tables_dropped"] == 1 and res["vectors_deleted"] == 2  # p0's two items
    assert store.tables.get(S.vector_table("m" * 64)).count_rows() == 4
    np.testing.assert_array_equal(store.load("model-x", "bbb").vectors, np.stack([_vec(r["item_key"]) for r in b]))
    assert not any(p.name.startswith("m" * 16 + "_" + "a" * 16) for p in store.cache.dir.iterdir())


def test_many_small_writes_are_compacted(store_path):
    store = open_store(store_path, create=True)
    rows = _rows([f"p{i}" for i in range(20)], 2)
    store.rows.write("d" * 64, rows, len(rows))
    store.begin_entry("m" * 64, "mx", {}, "d" * 64, "dx", {}, "multi", len(rows))
    for r in rows:
        store.writer.write("m" * 64, [r["item_key"]], {-1: _vec(r["item_key"])[None]}, [1], [False])
    assert len(store.tables.get(S.vector_table("m" * 64)).get_fragments()) == 40
    store.finish_entry("m" * 64, "d" * 64)
    assert len(store.tables.get(S.vector_table("m" * 64)).get_fragments()) == 1


def test_fingerprints_change_with_what_changes_vectors():
    base = dict(source="HuggingFaceTB/SmolLM2-135M-Instruct", weights="abc", dtype="float32", pooling="last",
                layers=(-1,), max_length=512, truncation_side="left", input_format="raw")
    fp = ModelFingerprint(**base)
    assert fp.hash == ModelFingerprint(**base, name_hint="other name").hash
    for k, v in [("dtype", "bfloat16"), ("pooling", "mean"), ("layers", (-1, -8)), ("max_length", 256),
                 ("truncation_side", "right"), ("input_format", "chat"), ("weights", "abd")]:
        assert ModelFingerprint(**{**base, k: v}).hash != fp.hash, k
    assert ModelFingerprint(**{**base, "template": "{{x}}"}).hash != fp.hash
    assert fp.name == "SmolLM2-135M-Instruct/float32/last/L-1/raw/512"
    assert item_key("ab", "c") != item_key("a", "bc")
    h1, h2 = DatasetHasher(), DatasetHasher()
    h1.update_many([{"a": 1}, {"a": 2}])
    h2.update_many([{"a": 2}, {"a": 1}])
    assert h1.hexdigest() != h2.hexdigest() and h1.count == 2


def _check_exactly_once(store_path: Path, n: int) -> None:
    sys.path.insert(0, str(HERE))
    from store_writer import MODEL, vector_for

    store = open_store(store_path)
    keys = store.vectors.cached(MODEL).to_pylist()
    assert len(keys) == len(set(keys)) == n
    e = store.resolve("writer-model", "writer-data")
    assert e.status == "complete" and e.rows == n
    emb = store.load("writer-model", "writer-data")
    np.testing.assert_array_equal(emb.vectors, np.stack([vector_for(k) for k in emb.item_key]))


def test_sigkill_mid_write_then_rerun_has_every_row_once(store_path, py):
    n = 400
    lines = kill_after([str(WRITER), str(store_path), str(n), "20", "0.05"], "wrote", 5)  # mid-run
    written = int(lines[-1].split()[1])
    assert written == 100
    store = open_store(store_path)
    partial = store.vectors.cached("a" * 64)
    assert written <= len(partial) < n
    e = store.resolve("writer-model", "writer-data")
    assert e.status == "partial"
    out = subprocess.run([py, str(WRITER), str(store_path), str(n), "50", "0"], capture_output=True, text=True,
                         check=True).stdout
    assert f"missing {n - len(partial)}" in out and "done complete 400" in out
    _check_exactly_once(store_path, n)


def test_two_concurrent_writers_leave_no_duplicates(store_path, py):
    n = 600
    procs = [subprocess.Popen([py, str(WRITER), str(store_path), str(n), "25", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    _check_exactly_once(store_path, n)
    store = open_store(store_path)
    assert len(store.entries()) == 1
    assert store.tables.get(S.dataset_table("d" * 64)).count_rows() == n


def test_cli_store_commands(store_path, tmp_path):
    store = open_store(store_path, create=True)
    _write(store, "m" * 64, "d" * 64, _rows(["p0", "p1", "p2"], 2, kind="pairwise"), _vec, kind="pairwise")
    r = CliRunner()
    res = r.invoke(cli, ["store", "ls", "--json", "--store", str(store_path)])
    assert res.exit_code == 0, res.output
    ls = json.loads(res.output)
    assert ls == [ls[0]] and ls[0]["rows"] == 6 and ls[0]["dim"] == 8 and ls[0]["status"] == "complete"
    assert {"model", "model_hash", "dataset", "dataset_hash", "dtype"} <= set(ls[0])
    res = r.invoke(cli, ["store", "ls", "--store", str(store_path)])
    assert "model-x [mmmmmmmmmmmm]" in res.output and "complete" in res.output
    res = r.invoke(cli, ["store", "show", "model-x", "ddd", "--store", str(store_path)])
    assert json.loads(res.output)["model_config"] == {"pooling": "last"}
    res = r.invoke(cli, ["store", "export", "mm", "dd", "--out", str(tmp_path / "v.npy"), "--store", str(store_path)])
    assert res.exit_code == 0 and np.load(tmp_path / "v.npy").shape == (6, 8)
    for args, msg in [(["show", "nope", "ddd"], "unknown model key 'nope'"),
                      (["export", "mm", "dd", "--out", str(tmp_path / "v.txt")], ".npy or .parquet"),
                      (["export", "mm", "dd", "--layer", "7", "--out", str(tmp_path / "v.npy")], "layer 7 was not")]:
        res = r.invoke(cli, ["store", *args, "--store", str(store_path)])
        assert res.exit_code == 2 and msg in res.output and "Traceback" not in res.output
    res = r.invoke(cli, ["store", "rm", "model-x", "ddd", "--store", str(store_path)])
    assert res.exit_code == 0
    res = r.invoke(cli, ["store", "gc", "--store", str(store_path)])
    assert "tables dropped: 2" in res.output
    res = r.invoke(cli, ["store", "ls", "--json", "--store", str(store_path)])
    assert json.loads(res.output) == []


def test_cli_error_is_one_line_exit_2(tmp_path):
    res = subprocess.run([sys.executable, "-m", "embrm.cli", "store", "ls", "--store", str(tmp_path / "nope")],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and res.stderr.startswith("error: no embrm store")


@pytest.mark.parametrize("dim,dtype", [(576, "float32"), (64, "float16"), (8, "float32")])
def test_direct_reads_equal_lance_reads_and_fall_back_when_the_layout_is_not_plain(store_path, dim, dtype):
    """Cold loads and point reads read pages directly where the layout is plain; whatever
    path is taken, the vectors equal Lance's own decoding of the same table."""
    import lance

    from embrm.store.scan import column_pages, read_column_rows, read_via_lance

    store = open_store(store_path, create=True)
    rng = np.random.default_rng(0)
    keys = [item_key("p", str(i)) for i in range(3000)]
    np_dtype = np.float16 if dtype == "float16" else np.float32
    x = rng.standard_normal((3000, dim)).astype(np_dtype)
    for s in range(0, 3000, 700):  # several fragments
        store.writer.write("m" * 64, keys[s:s + 700], {-1: x[s:s + 700]}, np.ones(len(keys[s:s + 700])),
                           np.zeros(len(keys[s:s + 700]), bool), dtype=dtype)
    ds = store.tables.get(S.vector_table("m" * 64))
    stored = ds.to_table(columns=["item_key"]).column(0).to_pylist()
    want = x[[keys.index(k) for k in stored]]  # table order
    rows = rng.integers(0, 3000, 500)
    ref = read_via_lance(ds, "layer_m1", dim, np_dtype, rows)
    np.testing.assert_array_equal(ref, want[rows])
    np.testing.assert_array_equal(read_column_rows(ds, "layer_m1", dim, dtype, rows), want[rows])
    np.testing.assert_array_equal(read_column_rows(ds, "layer_m1", dim, dtype, np.arange(3000)), want)
    plain = column_pages(ds, "layer_m1", dim, np.dtype(np_dtype).itemsize)
    if dim == 576:  # a model-sized fixed-size list is stored flat: the direct path is taken
        assert plain is not None and plain.rows == 3000
    got = store.vectors.point_read("m" * 64, [keys[5], "0" * 32, keys[2999]])
    assert list(got.found) == [True, False, True]
    np.testing.assert_array_equal(got.vectors[-1][[0, 2]], x[[5, 2999]])
    lance.dataset(ds.uri).delete(f"item_key = '{keys[7]}'")  # a deletion file: the direct path steps aside
    ds = store.tables.get(S.vector_table("m" * 64))
    assert column_pages(ds, "layer_m1", dim, np.dtype(np_dtype).itemsize) is None
    got = store.vectors.point_read("m" * 64, [keys[7], keys[8], keys[2000]])
    assert list(got.found) == [False, True, True]
    np.testing.assert_array_equal(got.vectors[-1][[1, 2]], x[[8, 2000]])


def test_point_read_index_follows_appends_and_rebuilds_after_compaction(store_path):
    store = open_store(store_path, create=True)
    keys = [item_key("q", str(i)) for i in range(60)]
    vec = {k: np.full(4, i, np.float32) for i, k in enumerate(keys)}
    for s in range(0, 60, 6):
        store.writer.write("m" * 64, keys[s:s + 6], {-1: np.stack([vec[k] for k in keys[s:s + 6]])}, np.ones(6),
                           np.zeros(6, bool))
        got = store.vectors.point_read("m" * 64, keys[: s + 6])  # after every commit, incrementally
        assert got.found.all() and np.array_equal(got.vectors[-1][:, 0], np.arange(s + 6))
    index = store.vectors.index("m" * 64)
    assert sum(len(seg.keys) for seg in index.segments) == 60
    compact(store.tables, S.vector_table("m" * 64), min_fragments=1)
    got = store.vectors.point_read("m" * 64, keys[::-1])
    assert got.found.all() and np.array_equal(got.vectors[-1][:, 0], np.arange(60)[::-1])
    assert len(index.segments) == 1


def test_load_cache_is_opt_in_bounded_and_evicts_the_least_recently_used(tmp_path, monkeypatch):
    from embrm.store.cache import LoadCache, Materialised

    def m(n):
        return Materialised(np.zeros((n, 256), np.float32), np.zeros(n), np.zeros(n, bool), np.ones(n, bool))

    assert not LoadCache("x").enabled  # off unless EMBRM_CACHE_SIZE says otherwise
    monkeypatch.setenv("EMBRM_CACHE_SIZE", "3.5M")  # three 1 MB files and their headers
    c = LoadCache("store-a", tmp_path)
    assert c.enabled and c.limit == int(3.5 * (1 << 20))
    for i in range(3):  # 1 MB each
        assert c.put(f"e{i}", (1, 1), m(1024)) is not None
        os.utime(c.paths(f"e{i}", (1, 1))[0], (1000 + i, 1000 + i))
    assert c.get("e0", (1, 1)) is not None  # e0 is now the most recently used
    c.put("e3", (1, 1), m(1024))
    names = sorted(p.name.split("_v")[0] for p in c.dir.glob("*.npy"))
    assert names == ["e0", "e2", "e3"]  # e1 went first
    assert c.put("huge", (1, 1), m(4096)) is None  # larger than the whole bound: not cached
    assert c.put("mapped", (1, 1), m(4096), force=True) is not None  # a memory map needs its file


def test_lancedb_opens_an_embrm_store(store_path):
    """embrm writes through pylance, but a store stays a LanceDB database."""
    lancedb = pytest.importorskip("lancedb")
    store = open_store(store_path, create=True)
    _write(store, "m" * 64, "d" * 64, _rows(["p0", "p1"], 2), _vec)
    db = lancedb.connect(store_path)
    listed = db.list_tables()
    assert {"catalog", "embrm_meta", S.vector_table("m" * 64)} <= set(getattr(listed, "tables", listed))
    assert db.open_table("catalog").count_rows() == 1
    vt = db.open_table(S.vector_table("m" * 64)).to_arrow()
    assert vt.num_rows == 4 and vt.schema.field("layer_m1").type.list_size == 8
