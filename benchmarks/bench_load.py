"""Load speed: ``embrm`` store load vs ``np.load`` of the same array, side by side.

Writes N x D float32 vectors (default 100k x 2048, 0.8 GB) into a fresh store as one
pairwise dataset, saves the same array as ``.npy`` on the same disk, then times:

* ``np.load``                       – the baseline;
* ``to_arrow`` + ``np.stack``        – the naive LanceDB read;
* embrm cold load                    – flat-buffer scan of the Lance table (cache off);
* embrm first load                   – the cold scan plus writing the materialisation;
* embrm warm load                    – reading the materialisation keyed by table version.

Each timing is the best of ``--repeat`` runs with a warm page cache. Prints a table and
writes JSON (``--json``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from embrm.store import item_key, open_store
from embrm.store import schema as S


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    ap.add_argument("--json", default="benchmarks/results/load.json")
    a = ap.parse_args()

    root = Path(a.dir or tempfile.mkdtemp(prefix="embrm-bench-"))
    shutil.rmtree(root / "store", ignore_errors=True)
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((a.rows, a.dim), dtype=np.float32)
    np.save(root / "vectors.npy", vecs)

    store = open_store(root / "store", create=True)
    mh, dh = "b" * 64, "c" * 64
    keys = [item_key(f"prompt {i // 2}", f"response {i}") for i in range(a.rows)]
    rows = ({"position": i, "item_key": k, "prompt_id": i // 2, "response_index": i % 2,
             "role": "chosen" if i % 2 == 0 else "rejected", "label": None, "reward": None,
             "prompt": "", "response": ""} for i, k in enumerate(keys))
    t = time.perf_counter()
    store.write_dataset_rows(dh, rows, a.rows)
    store.begin_entry(mh, "bench-model", {}, dh, "bench-data", {}, "pairwise", a.rows)
    chunk = 8192
    for s in range(0, a.rows, chunk):
        e = min(s + chunk, a.rows)
        store.write_vectors(mh, keys[s:e], {-1: vecs[s:e]}, np.full(e - s, 10), np.zeros(e - s, bool))
    store.finish_entry(mh, dh)
    write_s = time.perf_counter() - t

    def naive():
        t = store.table(S.vector_table(mh)).to_arrow()
        return np.stack(t.column(S.layer_column(-1)).to_numpy(zero_copy_only=False))

    def cold():
        return store.load("bench-model", "bench-data", use_cache=False).vectors

    def first():
        for p in store.cache_dir.glob("*"):
            p.unlink()
        return store.load("bench-model", "bench-data").vectors

    def warm():
        return store.load("bench-model", "bench-data").vectors

    def npload():
        return np.load(root / "vectors.npy")

    assert np.array_equal(cold(), vecs) and np.array_equal(warm(), vecs)
    results = {"np.load": best(npload, a.repeat)}
    results["naive to_arrow+stack"] = best(naive, 1)
    results["embrm cold (lance scan)"] = best(cold, a.repeat)
    results["embrm first (scan+materialise)"] = best(first, a.repeat)
    results["embrm warm (materialised)"] = best(warm, a.repeat)
    results["np.load (again)"] = best(npload, a.repeat)
    base = min(results["np.load"], results["np.load (again)"])
    gb = vecs.nbytes / 1e9
    print(f"# {a.rows} x {a.dim} float32 = {gb:.2f} GB; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; write took {write_s:.1f} s")
    print(f"{'method':34s} {'seconds':>8s} {'GB/s':>6s} {'speed vs np.load':>17s}")
    for k, v in results.items():
        print(f"{k:34s} {v:8.3f} {gb / v:6.2f} {base / v:16.2f}x")
    out = {"rows": a.rows, "dim": a.dim, "gb": gb, "cores": os.cpu_count(), "seconds": results,
           "speed_vs_npload": {k: base / v for k, v in results.items()}, "write_seconds": write_s}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=2))
    if a.dir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
