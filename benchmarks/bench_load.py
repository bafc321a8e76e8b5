"""Load speed: a store entry against ``np.load`` of the same array, side by side, and
against a plain S3 client on an object store.

Local (default 100,000 x 2,048 float32, 0.82 GB, one entry written by the store's own
path), best of ``--repeat`` with a warm page cache:

* ``np.load`` of the same array from a ``.npy`` on the same disk (twice, first and last);
* the naive read: ``to_table()`` of the Lance column and ``np.stack``;
* ``Store.load`` in a fresh process (nothing of the store in memory) and again in the same
  process; the direct page reads (:mod:`embrm.store.scan`) with no ``.npy`` copy;
* the opt-in ``.npy`` cache (``EMBRM_CACHE_SIZE``): the first load that writes it, then a
  load that reads it.

Object store (``--s3-rows``, default 20,000 x 2,048): a real S3-compatible server (moto)
on loopback; ``Store.load`` against boto3 ``get_object`` of the same table's data files.

Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from embrm.store import item_key, open_store
from embrm.store import schema as S

from _common import best_of, machine_line, table, write_json

FRESH = """
import json, sys, time, numpy as np
from embrm.store import open_store
store = open_store(sys.argv[1])
store.entries()  # imports paid, as in any trainer
np.load(sys.argv[2]).fill(0)  # first touch of fresh memory, untimed (it costs several times a later one on a VM)
t = time.perf_counter(); store.load("load-model", "load-data", use_cache=False); first = time.perf_counter() - t
t = time.perf_counter(); np.load(sys.argv[2]); np_first = time.perf_counter() - t
print(json.dumps([first, np_first]))
"""


def build(uri: str, vecs: np.ndarray, chunk: int = 20_000) -> None:
    store = open_store(uri, create=True)
    n = len(vecs)
    keys = [item_key(f"prompt {i // 2}", f"response {i}") for i in range(n)]
    rows = ({"position": i, "item_key": k, "prompt_id": i // 2, "response_index": i % 2,
             "role": "chosen" if i % 2 == 0 else "rejected", "label": None, "reward": None,
             "prompt": f"prompt {i // 2}", "response": f"response {i}"} for i, k in enumerate(keys))
    store.rows.write("c" * 64, rows, n)
    store.begin_entry("b" * 64, "load-model", {}, "c" * 64, "load-data", {}, "pairwise", n)
    for s in range(0, n, chunk):
        store.writer.write("b" * 64, keys[s:s + chunk], {-1: vecs[s:s + chunk]}, np.full(min(chunk, n - s), 10),
                           np.zeros(min(chunk, n - s), bool))
    store.finish_entry("b" * 64, "c" * 64)


def local(root: Path, rows: int, dim: int, repeat: int) -> list[dict]:
    vecs = np.random.default_rng(0).standard_normal((rows, dim), dtype=np.float32)
    np.save(root / "vectors.npy", vecs)
    build(str(root / "store"), vecs)
    store = open_store(root / "store")
    ds = store.tables.get(S.vector_table("b" * 64))
    gb = vecs.nbytes / 1e9

    def naive() -> np.ndarray:
        return np.stack(ds.to_table(columns=["layer_m1"]).column(0).to_numpy(zero_copy_only=False))

    def fresh() -> list[float]:
        """(first embrm load, then np.load) in a new process: the table version is cold there."""
        out = subprocess.run([sys.executable, "-c", FRESH, str(root / "store"), str(root / "vectors.npy")],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    res = {"np.load (first)": best_of(lambda: np.load(root / "vectors.npy"), repeat)}
    res["naive: to_table + np.stack"] = best_of(naive, 1)
    runs = [fresh() for _ in range(repeat)]
    res["embrm load, fresh process"] = min(r[0] for r in runs)
    res["np.load, fresh process"] = min(r[1] for r in runs)
    res["embrm load, same process"] = best_of(lambda: store.load("load-model", "load-data", use_cache=False), repeat)
    assert np.array_equal(store.load("load-model", "load-data", use_cache=False).vectors, vecs)
    os.environ["EMBRM_CACHE"] = str(root / "cache")
    os.environ["EMBRM_CACHE_SIZE"] = "8G"
    cached = open_store(root / "store")
    res["embrm load writing the .npy cache"] = best_of(lambda: (shutil.rmtree(root / "cache", ignore_errors=True),
                                                                cached.load("load-model", "load-data")), 1)
    res["embrm load from the .npy cache"] = best_of(lambda: cached.load("load-model", "load-data"), repeat)
    res["np.load (again)"] = best_of(lambda: np.load(root / "vectors.npy"), repeat)
    base = min(res["np.load (first)"], res["np.load (again)"])
    return [{"where": "local", "method": k, "seconds": v, "GB/s": gb / v, "vs np.load": base / v}
            for k, v in res.items()]


def remote(root: Path, rows: int, dim: int, repeat: int) -> list[dict]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from s3server import S3Server

    server = S3Server(root)
    try:
        os.environ.update(server.env())
        uri = "s3://embrm/bench"
        vecs = np.random.default_rng(1).standard_normal((rows, dim), dtype=np.float32)
        build(uri, vecs)
        store = open_store(uri)
        gb = vecs.nbytes / 1e9
        s3 = server.client("s3")
        data = [k for k in server.keys(f"bench/{S.vector_table('b' * 64)}.lance/data/")]
        size = sum(s3.head_object(Bucket="embrm", Key=k)["ContentLength"] for k in data)

        def plain() -> None:
            for k in data:
                s3.get_object(Bucket="embrm", Key=k)["Body"].read()

        t_plain = best_of(plain, repeat)
        t_load = best_of(lambda: store.load("load-model", "load-data"), repeat)
        assert np.array_equal(store.load("load-model", "load-data").vectors, vecs)
        return [{"where": "S3 (moto, loopback)", "method": "boto3 get_object of the table's data files",
                 "seconds": t_plain, "GB/s": size / 1e9 / t_plain, "vs np.load": None},
                {"where": "S3 (moto, loopback)", "method": "embrm load (no local copy)", "seconds": t_load,
                 "GB/s": gb / t_load, "vs np.load": None, "vs boto3": t_plain / t_load}]
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--s3-rows", type=int, default=20_000, help="0 skips the object-store part")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default="load.json")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="embrm-bench-load-"))
    try:
        rows = local(root, a.rows, a.dim, a.repeat)
        if a.s3_rows:
            rows += remote(root, a.s3_rows, a.dim, a.repeat)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(machine_line())
    print(f"# local: {a.rows:,} x {a.dim} float32 ({a.rows * a.dim * 4 / 1e9:.2f} GB), one entry; "
          f"object store: {a.s3_rows:,} x {a.dim}; best of {a.repeat}, page cache warm")
    print(table(rows, ["where", "method", "seconds", "GB/s", "vs np.load", "vs boto3"]))
    print(f"wrote {write_json(a.json, {'table': rows})}")


if __name__ == "__main__":
    main()
