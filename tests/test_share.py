"""Embeddings that travel: `store copy` between local disk, S3 (moto) and a service,
bundles exported and imported (checked as hostile input), provenance recorded by every
engine and carried along, and `store verify`."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from embrm.cli import main as cli
from embrm.errors import EmbrmError
from embrm.extractor import extract
from embrm.store import open_store
from embrm.store import schema as S
from embrm.store.bundle import MANIFEST, ROWS_FILE, VECTORS_FILE, export_bundle
from embrm.store.copy import copy_store
from embrm.store.keys import ModelFingerprint

from conftest import extract_config

LAYERS = (-1, 1)


def _data(path: Path, n: int = 24, start: int = 0) -> Path:
    recs = [{"prompt": f"Question {i % 5}?", "response": f" answer {i}" * (1 + i % 3)} for i in range(start, n)]
    recs += recs[:3]  # repeated items: one vector each
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


@pytest.fixture(scope="module")
def src(tmp_path_factory, tiny_model):
    """A local store with one entry of two layers, extracted by the local engine."""
    root = tmp_path_factory.mktemp("share")
    data = _data(root / "d.jsonl")
    res = extract(extract_config(data, tiny_model, root / "src", dtype="float32", layers=LAYERS, window=4,
                                 quiet=True))
    return {"root": root, "data": data, "store": root / "src", "mh": res.model_hash, "dh": res.dataset_hash}


def _same(a, b, mh: str, dh: str) -> None:
    """Two stores hold the entry bit for bit: every layer, in dataset order, and one provenance."""
    sa, sb = open_store(a) if not hasattr(a, "load") else a, open_store(b) if not hasattr(b, "load") else b
    for layer in LAYERS:
        va, vb = sa.load(mh, dh, layer, use_cache=False), sb.load(mh, dh, layer, use_cache=False)
        assert va.vectors.dtype == vb.vectors.dtype and va.vectors.tobytes() == vb.vectors.tobytes()
        assert np.array_equal(va.prompt_id, vb.prompt_id) and np.array_equal(va.response_index, vb.response_index)
    def prov(st) -> list:  # ids, counts and facts (the time is when a store first saw the id)
        return [(p["id"], p["vectors"], {k: v for k, v in p["facts"].items() if k != "time"})
                for p in st.entry_provenance(mh, dh)["provenance"]]

    assert prov(sa) == prov(sb) and prov(sa)[0][2]["engine"] in ("local", "service")


def _empty(path) -> None:
    """Nothing was written: no entry and no vector table."""
    st = open_store(path)
    assert st.entries() == [] and not [n for n in st.tables.names() if n.startswith(("vec_", "ds_"))]


def test_copy_local_s3_local_and_bundles_round_trip_bit_for_bit(src, s3, tmp_path):
    mh, dh = src["mh"], src["dh"]
    res = copy_store(open_store(src["store"]), open_store(s3.uri, create=True), [(mh[:12], dh[:12])],
                     progress=False)
    e = res["entries"][0]
    assert e.copied == e.vectors == 24 and e.present == 0  # 24 distinct items of 27 rows
    again = CliRunner().invoke(cli, ["store", "copy", "--from", str(src["store"]), "--to", s3.uri, mh[:12],
                                     dh[:12], "--quiet"])
    assert again.exit_code == 0 and "nothing to copy" in again.output and e.checksum[:16] in again.output
    back = CliRunner().invoke(cli, ["store", "copy", "--from", s3.uri, "--to", str(tmp_path / "back"), "--all",
                                    "--quiet"])
    assert back.exit_code == 0 and "copied 24 vectors" in back.output, back.output
    _same(src["store"], tmp_path / "back", mh, dh)
    _same(src["store"], s3.uri, mh, dh)
    # bundle from S3, imported into a new local store; a second import is a no-op
    r = CliRunner().invoke(cli, ["store", "export", mh[:12], dh[:12], "--format", "bundle", "--out",
                                 str(tmp_path / "b"), "--store", s3.uri])
    assert r.exit_code == 0, r.output
    imp = CliRunner().invoke(cli, ["store", "import", str(tmp_path / "b"), "--store", str(tmp_path / "imp")])
    assert imp.exit_code == 0 and "copied 24 vectors" in imp.output, imp.output
    imp = CliRunner().invoke(cli, ["store", "import", str(tmp_path / "b"), "--store", str(tmp_path / "imp")])
    assert imp.exit_code == 0 and "nothing to copy" in imp.output
    _same(src["store"], tmp_path / "imp", mh, dh)
    # ...and into S3 from a bundle exported locally: the same files, byte for byte
    export_bundle(open_store(src["store"]), mh, dh, tmp_path / "b2")
    assert (tmp_path / "b" / VECTORS_FILE).read_bytes() == (tmp_path / "b2" / VECTORS_FILE).read_bytes()
    assert json.loads((tmp_path / "b" / MANIFEST).read_text())["files"] == \
        json.loads((tmp_path / "b2" / MANIFEST).read_text())["files"]


def test_a_bundle_is_read_by_plain_tools_and_described_in_croissant(src, tmp_path):
    out = export_bundle(open_store(src["store"]), src["mh"], src["dh"], tmp_path / "b")
    m = json.loads((out / MANIFEST).read_text())
    assert m["model"]["hash"] == src["mh"] and m["dataset"]["hash"] == src["dh"]
    assert ModelFingerprint(**{k: v for k, v in m["model"]["config"].items() if k in
                               ModelFingerprint.__dataclass_fields__} | {"layers": tuple(LAYERS)}).hash == src["mh"]
    assert set(m["provenance"]) and m["vectors"] | {"checksum": ""} == {"count": 24, "dim": 32, "dtype": "float32",
                                                                        "layers": list(LAYERS), "checksum": ""}
    vec = pq.read_table(out / VECTORS_FILE)
    stored = open_store(src["store"]).vectors.point_read(src["mh"], vec.column("item_key").to_pylist())
    for layer in LAYERS:  # an independent read: the parquet column against the store's point reads
        flat = np.stack(vec.column(S.layer_column(layer)).to_pylist()).astype(np.float32)
        assert flat.tobytes() == stored.vectors[layer].tobytes()
    rows = pq.read_table(out / ROWS_FILE)
    assert rows.num_rows == 27 and {"item_key", "prompt", "response", "prompt_id", "label"} <= set(rows.column_names)
    datasets = pytest.importorskip("datasets")
    hv = datasets.load_dataset("parquet", data_dir=str(out / "vectors"), split="train")
    assert hv.num_rows == 24 and len(hv[0][S.layer_column(-1)]) == 32
    hr = datasets.load_dataset(str(out), "rows", split="train")
    assert hr["prompt"] == rows.column("prompt").to_pylist()
    cr = json.loads((out / "croissant.json").read_text())
    assert cr["@type"] == "sc:Dataset" and {d["sha256"] for d in cr["distribution"]} == \
        {f["sha256"] for f in m["files"].values()}
    mlc = pytest.importorskip("mlcroissant")
    ds = mlc.Dataset(jsonld=str(out / "croissant.json"))
    recs = list(ds.records("vectors"))
    assert len(recs) == 24


def _bundle(src, tmp_path: Path) -> Path:
    return export_bundle(open_store(src["store"]), src["mh"], src["dh"], tmp_path / "b")


def _refused(bundle: Path, target: Path, match: str) -> None:
    r = CliRunner().invoke(cli, ["store", "import", str(bundle), "--store", str(target)])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and match in r.output, r.output
    _empty(target)


def _rewrite(path: Path, table) -> None:
    pq.write_table(table, path)


def _fix_manifest(bundle: Path, **changes) -> dict:
    m = json.loads((bundle / MANIFEST).read_text())
    for name in (ROWS_FILE, VECTORS_FILE):  # a consistent forgery: sizes and sha256 of the changed files
        from embrm.store.bundle import sha256_file

        m["files"][name] |= {"bytes": (bundle / name).stat().st_size, "sha256": sha256_file(bundle / name)}
    for k, v in changes.items():
        m[k] = v
    (bundle / MANIFEST).write_text(json.dumps(m))
    return m


def test_tampered_bundles_are_refused_in_one_line_with_nothing_written(src, tmp_path):
    import pyarrow as pa

    b = _bundle(src, tmp_path)
    vec_path, rows_path = b / VECTORS_FILE, b / ROWS_FILE
    good_vec, good_rows = vec_path.read_bytes(), rows_path.read_bytes()
    # a changed byte in the vectors' file (same size): its sha256
    flipped = bytearray(good_vec)
    flipped[len(flipped) // 2] ^= 0x01
    vec_path.write_bytes(bytes(flipped))
    _refused(b, tmp_path / "t1", "sha256")
    # a changed vector, the file rewritten and the manifest's sizes and sha256 forged: the checksum
    vec_path.write_bytes(good_vec)
    t = pq.read_table(vec_path)
    col = t.column(S.layer_column(-1)).combine_chunks()
    vals = col.flatten().to_numpy().copy()
    vals[5] += 1e-3
    _rewrite(vec_path, t.set_column(t.schema.get_field_index(S.layer_column(-1)), S.layer_column(-1),
                                    pa.FixedSizeListArray.from_arrays(pa.array(vals), 32)))
    _fix_manifest(b)
    _refused(b, tmp_path / "t1", "checksum")
    vec_path.write_bytes(good_vec)
    # a changed text, sha256 forged: the key no longer hashes its texts; the rows are named
    rows = pq.read_table(rows_path)
    prompts = rows.column("prompt").to_pylist()
    prompts[7] = prompts[7] + " (edited)"
    _rewrite(rows_path, rows.set_column(rows.schema.get_field_index("prompt"), "prompt", pa.array(prompts,
                                                                                             pa.large_string())))
    _fix_manifest(b)
    _refused(b, tmp_path / "t2", "rows 7)")
    rows_path.write_bytes(good_rows)
    _fix_manifest(b)
    # a truncated parquet file: its size first
    vec_path.write_bytes(good_vec[: len(good_vec) // 2])
    _refused(b, tmp_path / "t3", "cut short or changed")
    _fix_manifest(b)  # even with the manifest made to agree, Parquet itself refuses it
    _refused(b, tmp_path / "t3", "not a readable Parquet file")
    vec_path.write_bytes(good_vec)
    m = _fix_manifest(b)
    # absurd sizes, refused before any file is read
    _fix_manifest(b, dataset=m["dataset"] | {"rows": 10 ** 15})
    _refused(b, tmp_path / "t4", "dataset.rows = 1000000000000000")
    _fix_manifest(b, dataset=m["dataset"], files=m["files"] | {ROWS_FILE: m["files"][ROWS_FILE] | {"bytes": 2 ** 60}})
    _refused(b, tmp_path / "t4", "bytes")
    _fix_manifest(b, files=m["files"] | {"../../etc/passwd": m["files"][ROWS_FILE]})
    _refused(b, tmp_path / "t4", "a bundle holds exactly")
    # and the untouched bundle imports
    _fix_manifest(b, files=m["files"])
    assert CliRunner().invoke(cli, ["store", "import", str(b), "--store", str(tmp_path / "ok")]).exit_code == 0


def test_a_manifest_claiming_another_model_imports_but_verify_fails_naming_items(src, tmp_path, tiny_model):
    b = _bundle(src, tmp_path)
    m = json.loads((b / MANIFEST).read_text())
    cfg = m["model"]["config"] | {"pooling": "mean"}  # the same weights, another embedding: a forged claim
    fp = ModelFingerprint(**{k: cfg[k] for k in ModelFingerprint.__dataclass_fields__} | {"layers": tuple(LAYERS)})
    m["model"] |= {"config": cfg, "hash": fp.hash, "name": fp.name}
    (b / MANIFEST).write_text(json.dumps(m))
    r = CliRunner().invoke(cli, ["store", "import", str(b), "--store", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["store", "verify", fp.hash[:12], src["dh"][:12], "--sample", "5", "--store",
                                 str(tmp_path / "s"), "--model", str(tiny_model), "--device", "cpu"])
    assert r.exit_code == 1 and "FAILED: 5 item(s) over tolerance" in r.output, r.output
    assert r.output.count("  item ") >= 5 and "stored by float32 on cpu" in r.output and "this machine:" in r.output
    # the honest entry passes
    r = CliRunner().invoke(cli, ["store", "verify", src["mh"][:12], src["dh"][:12], "--sample", "8", "--store",
                                 str(src["store"]), "--device", "cpu"])
    assert r.exit_code == 0 and "OK: all 8 items within tolerance" in r.output, r.output


def test_a_conflicting_target_is_refused_naming_the_keys(src, tmp_path):
    b = tmp_path / "t"
    copy_store(open_store(src["store"]), open_store(b, create=True), [(src["mh"], src["dh"])], progress=False)
    st = open_store(b)
    key = st.vectors.cached(src["mh"])[3].as_py()
    st.tables.get(S.vector_table(src["mh"])).delete(f"item_key = '{key}'")
    v = st.vectors  # the same key, other vectors
    from embrm.store.vectors import build_vector_table

    st.writer.commit(src["mh"], build_vector_table([key], {x: np.ones((1, 32), np.float32) for x in LAYERS},
                                                   np.ones(1), np.zeros(1, bool)))
    before = st.tables.get(S.vector_table(src["mh"])).version
    with pytest.raises(EmbrmError, match=f"holds other vectors for 1 item key.*{key}.*nothing was copied"):
        copy_store(open_store(src["store"]), st, [(src["mh"], src["dh"])], progress=False)
    assert st.tables.get(S.vector_table(src["mh"])).version == before and len(v.cached(src["mh"])) == 24


COPY_SCRIPT = """
import sys, time
from embrm.store import copy, transfer, open_store
from embrm.store.lance_store import LanceStore
transfer.SCAN_ROWS, copy.COMMIT_BYTES = 3, 1  # a commit of each window of at most three vectors
commit = LanceStore.commit_vectors
def slow(self, mh, t):
    n = commit(self, mh, t)
    print("commit", n, flush=True)
    time.sleep(float(sys.argv[3]))
    return n
LanceStore.commit_vectors = slow
from embrm.store.copy import copy_store
res = copy_store(open_store(sys.argv[1]), open_store(sys.argv[2], create=True), [], everything=True, progress=False)
print(res["entries"][0].line(), flush=True)
"""


def _copier(src_store: Path, dst: Path, pause: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", COPY_SCRIPT, str(src_store), str(dst), str(pause)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill9_during_a_copy_then_a_rerun_loses_and_duplicates_nothing(src, tmp_path):
    dst = tmp_path / "dst"
    p = _copier(src["store"], dst, 0.5)
    committed = 0
    for _ in range(3):  # three commits of at most three, then kill -9 in the middle of the copy
        line = p.stdout.readline()
        assert line.startswith("commit"), line + p.stderr.read()
        committed += int(line.split()[1])
    p.send_signal(signal.SIGKILL)
    p.wait(30)
    p.stdout.close()
    p.stderr.close()
    have = open_store(dst).vectors.cached(src["mh"]).to_pylist()
    assert committed <= len(have) < 24 and len(set(have)) == len(have)  # nothing committed is lost
    p = _copier(src["store"], dst, 0)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0 and f"copied {24 - len(have)} vectors" in out, out + err
    keys = open_store(dst).vectors.cached(src["mh"]).to_pylist()
    assert len(keys) == len(set(keys)) == 24
    _same(src["store"], dst, src["mh"], src["dh"])


# the module's extraction (two layers, windows of 4), slowed: it prints each committed window
EXTRACT_SCRIPT = """
import sys, time
from embrm.extractor import DatasetSpec, EmbeddingSpec, ExtractConfig, RunOptions, extract
cfg = ExtractConfig(DatasetSpec(sys.argv[1]), EmbeddingSpec(model=sys.argv[2], dtype="float32", layers=(-1, 1)),
                    RunOptions(store=sys.argv[3], window=4, quiet=True))
def slow(n):
    print("window", n, flush=True)
    time.sleep(float(sys.argv[4]))
extract(cfg, on_window=slow)
"""


def test_a_copy_and_an_extraction_into_the_same_entry_store_each_item_once(src, tmp_path, tiny_model):
    dst = tmp_path / "dst"
    ex = subprocess.Popen([sys.executable, "-c", EXTRACT_SCRIPT, str(src["data"]), str(tiny_model), str(dst), "0.15"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert ex.stdout.readline().startswith("window"), ex.stderr.read()  # the extraction has begun
    cp = _copier(src["store"], dst, 0.2)
    out, err = cp.communicate(timeout=120)
    ex_out, ex_err = ex.communicate(timeout=120)
    assert ex.returncode == 0, ex_out + ex_err
    keys = open_store(dst).vectors.cached(src["mh"]).to_pylist()
    assert len(keys) == len(set(keys)) == 24  # 0 duplicated, 0 lost
    e = open_store(dst).resolve(src["mh"], src["dh"])
    assert e.status == "complete" and e.rows == 27
    if cp.returncode == 0:  # the extraction computed the keys it stored in the same batches: equal bits
        _same(src["store"], dst, src["mh"], src["dh"])
        return
    # the extraction stored some keys in other batches (last bits differ): the copy says so, never silently
    assert "verification failed" in err and "hold other vectors there" in err and "0 missing" in err, out + err
    a, b = open_store(src["store"]).load(src["mh"], src["dh"]), open_store(dst).load(src["mh"], src["dh"])
    np.testing.assert_allclose(a.vectors, b.vectors, rtol=1e-4, atol=1e-5)


def _put_window(url: str, mh: str, table) -> tuple[int, str]:
    from embrm.store.wire import ARROW, to_ipc

    from servers import http

    status, body, _ = http("PUT", f"{url}/v1/vectors/{mh}", to_ipc(table), {"Content-Type": ARROW})
    return status, json.loads(body)["error"]["message"] if status >= 400 else ""


def test_a_service_takes_copies_in_checked_and_gives_them_back_bit_for_bit(src, tmp_path, tiny_model):
    from embrm.store.vectors import build_vector_table

    from servers import Server

    s = Server(tiny_model, tmp_path / "svc")
    try:
        mh, dh = src["mh"], src["dh"]
        keys = [f"{i:032x}" for i in range(2)]
        ok = build_vector_table(keys, {x: np.ones((2, 32), np.float32) for x in LAYERS}, np.ones(2), np.zeros(2, bool))
        assert _put_window(s.url, mh, ok) == (400, f"model {mh[:12]} is not registered here; "
                                              "register its entry first (POST /v1/entries/register)")
        res = copy_store(open_store(src["store"]), open_store(s.url), [(mh, dh)], progress=False)
        assert res["entries"][0].copied == 24
        nan = build_vector_table(keys, {x: np.ones((2, 32), np.float32) for x in LAYERS}, np.ones(2),
                                 np.zeros(2, bool))
        flat = nan.column(S.layer_column(1)).combine_chunks().flatten().to_numpy().copy()
        flat[3] = np.nan
        import pyarrow as pa

        nan = nan.set_column(nan.schema.get_field_index(S.layer_column(1)), S.layer_column(1),
                             pa.FixedSizeListArray.from_arrays(pa.array(flat), 32))
        assert _put_window(s.url, mh, nan) == (400, "layer 1 has NaN or inf values; refusing to store them")
        bad_key = build_vector_table(["X" * 32, keys[1]], {x: np.ones((2, 32), np.float32) for x in LAYERS},
                                     np.ones(2), np.zeros(2, bool))
        assert _put_window(s.url, mh, bad_key)[1] == "every item key must be 32 lowercase hex digits"
        one_layer = build_vector_table(keys, {-1: np.ones((2, 32), np.float32)}, np.ones(2), np.zeros(2, bool))
        assert "the model registered [-1, 1]" in _put_window(s.url, mh, one_layer)[1]
        assert len(open_store(tmp_path / "svc").vectors.cached(mh)) == 24  # nothing of the refused windows
        again = copy_store(open_store(src["store"]), open_store(s.url), [(mh, dh)], progress=False)
        assert again["entries"][0].copied == 0
        copy_store(open_store(s.url), open_store(tmp_path / "back", create=True), [(mh, dh)], progress=False)
        _same(src["store"], tmp_path / "back", mh, dh)
        _same(src["store"], tmp_path / "svc", mh, dh)
    finally:
        s.stop()


def test_service_extraction_records_provenance_and_copies_out_bit_for_bit(tmp_path, tiny_model):
    from servers import Server

    s = Server(tiny_model, tmp_path / "svc")
    try:
        data = _data(tmp_path / "p.jsonl", 10)
        r = CliRunner().invoke(cli, ["extract", "--dataset", str(data), "--server", s.url, "--quiet"])
        assert r.exit_code == 0 and "status complete" in r.output, r.output
        e = open_store(s.url).entries()[0]
        prov = open_store(s.url).entry_provenance(e.model_hash, e.dataset_hash)["provenance"]
        assert len(prov) == 1 and prov[0]["vectors"] == 10 and prov[0]["facts"]["engine"] == "service"
        assert prov[0]["facts"]["dtype"] == "float32" and prov[0]["facts"]["device"].startswith("cpu: ")
        res = copy_store(open_store(s.url), open_store(tmp_path / "local", create=True),
                         [(e.model_hash, e.dataset_hash)], progress=False)
        assert res["entries"][0].copied == 10
        local = open_store(tmp_path / "local")
        for layer in e.layers:
            assert local.load(e.model_hash, e.dataset_hash, layer).vectors.tobytes() == \
                open_store(s.url).load(e.model_hash, e.dataset_hash, layer).vectors.tobytes()
        assert local.entry_provenance(e.model_hash, e.dataset_hash)["provenance"] == prov
        r = CliRunner().invoke(cli, ["store", "show", e.model_hash[:12], e.dataset_hash[:12], "--store", s.url])
        assert r.exit_code == 0 and "engine service" in r.output and "MIXED" not in r.output
        # online misses (/v1/embed) are committed with the same provenance: an entry made of
        # them afterwards finds every vector cached and every one of them accounted for
        online = [{"prompt": f"Online {i}?", "response": f" reply {i}"} for i in range(6)]
        status, body = s.post("/v1/embed", {"items": online})
        assert status == 200
        keys = pa.array([it["item_key"] for it in body["items"]])
        deadline = time.monotonic() + 20  # the committer flushes every 0.2 s (tests/servers.py)
        while len(open_store(s.url).missing_keys(e.model_hash, keys)) and time.monotonic() < deadline:
            time.sleep(0.2)
        (tmp_path / "o.jsonl").write_text("".join(json.dumps(r) + "\n" for r in online))
        r = CliRunner().invoke(cli, ["extract", "--dataset", str(tmp_path / "o.jsonl"), "--server", s.url, "--quiet"])
        assert "computed 0 " in r.output, r.output
        eo = next(x for x in open_store(s.url).entries() if x.dataset_hash != e.dataset_hash and x.kind != "served")
        po = open_store(s.url).entry_provenance(eo.model_hash, eo.dataset_hash)["provenance"]
        assert [p["facts"]["engine"] for p in po] == ["service"] and po[0]["vectors"] == 6, po
    finally:
        s.stop()


def test_local_provenance_is_this_machine_and_a_mixed_entry_is_flagged(src, tmp_path, tiny_model):
    import torch
    import transformers

    from embrm.extractor.embedder import Embedder, EmbeddingSpec
    from embrm.extractor.engines.local import run_local
    from embrm.extractor.plan import plan_extraction, scan_dataset
    from embrm.extractor.provenance import extraction_facts

    st = open_store(src["store"])
    (p,) = st.entry_provenance(src["mh"], src["dh"])["provenance"]
    f = p["facts"]
    assert p["vectors"] == 24 and (f["engine"], f["dtype"], f["torch"], f["transformers"]) == \
        ("local", "float32", torch.__version__, transformers.__version__)
    assert f["device"].startswith("cpu: ") and f["time"].startswith("20")
    # half the entry in float32, the other half from weights in bfloat16 under the same fingerprint
    data = _data(tmp_path / "m.jsonl", 16)
    half = tmp_path / "half.jsonl"
    half.write_text("".join(data.read_text().splitlines(keepends=True)[:8]))
    cfg = extract_config(half, tiny_model, tmp_path / "mixed", dtype="float32", quiet=True)
    extract(cfg)
    store = open_store(tmp_path / "mixed")
    f32 = Embedder(EmbeddingSpec(model=str(tiny_model), dtype="float32"), "cpu")
    b16 = Embedder(EmbeddingSpec(model=str(tiny_model), dtype="bfloat16"), "cpu")
    plan = plan_extraction(scan_dataset(extract_config(data, tiny_model).data), f32, store)
    plan.register(store)
    run_local(plan, store, b16.embed, provenance=extraction_facts(b16, "local"))
    store.finish_entry(plan.model_hash, plan.data.dataset_hash)
    r = CliRunner().invoke(cli, ["store", "show", plan.model_hash[:12], plan.data.dataset_hash[:12], "--store",
                                 str(tmp_path / "mixed")])
    assert r.exit_code == 0 and "MIXED PROVENANCE" in r.output, r.output
    shown = json.loads(r.output)
    assert shown["mixed_provenance"] and sorted((p["facts"]["dtype"], p["vectors"]) for p in
                                                shown["provenance_records"]) == [("bfloat16", 8), ("float32", 8)]
    assert any("8 vectors" in line and "bfloat16 on cpu: " in line for line in shown["provenance"])


@pytest.mark.slow
def test_ray_extraction_records_its_provenance(tmp_path, tiny_model):
    pytest.importorskip("ray")
    from test_ray import _driver, _finish

    data = _data(tmp_path / "r.jsonl", 12)
    out, err = _finish(_driver(["--dataset", str(data), "--store", str(tmp_path / "ray"), "--model", str(tiny_model),
                                "--dtype", "float32", "--num-workers", "1", "--cpus-per-worker", "0.5"]))
    assert "status complete" in out, err[-3000:]
    st = open_store(tmp_path / "ray")
    e = st.entries()[0]
    (p,) = st.entry_provenance(e.model_hash, e.dataset_hash)["provenance"]
    assert p["vectors"] == 12 and p["facts"]["engine"] == "ray" and p["facts"]["dtype"] == "float32"


def test_a_format_1_store_reads_and_takes_new_vectors(tmp_path):
    """A vector table without the provenance column (as embrm before format 2 wrote it)."""
    import pyarrow as pa

    from embrm.store.vectors import VectorInfo, build_vector_table

    st = open_store(tmp_path / "old", create=True)
    old = VectorInfo(4, "float32", (-1,), provenance=False)
    st.tables.create(S.vector_table("a" * 64), old.schema())
    keys = [f"{i:032x}" for i in range(6)]
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    t = build_vector_table(keys[:3], {-1: x[:3]}, np.ones(3), np.zeros(3, bool), provenance={"engine": "local"})
    assert st.writer.commit("a" * 64, t) == 3
    assert st.writer.commit("a" * 64, build_vector_table(keys[3:], {-1: x[3:]}, np.ones(3), np.zeros(3, bool))) == 3
    got = st.vectors.point_read("a" * 64, keys)
    assert got.found.all() and np.array_equal(got.vectors[-1], x)
    assert "provenance" not in st.tables.get(S.vector_table("a" * 64)).schema.names
    assert t.schema.field("provenance").type == pa.string() and t.column("provenance")[0].as_py()
