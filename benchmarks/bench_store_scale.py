"""The store at a million rows: one entry of 1,000,000 x 576 float32 vectors (2.3 GB),
written by the store's own write path, then loaded, point-read, listed and cleaned.

Reports write time; load time in a fresh process and again in the same process, against
``np.load`` of the same array; peak memory of a load (the process's growth over the
array's size); ``get_vectors`` of 10,000 random keys (first call, which builds the key
index, and a repeat); ``embrm store ls`` as a whole command; ``gc``; disk bytes against
the raw array. Prints a table and writes JSON. Fits 2 cores and 24 GB in about ten minutes.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from embrm.store import item_key, open_store

from _common import machine_line, table, write_json

LOAD = """
import json, sys, time, numpy as np
from embrm.store import open_store

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # MB

store = open_store(sys.argv[1])
store.entries()  # imports paid, as in any trainer
# a first touch of fresh memory costs several times a later one on a VM's guest memory;
# np.load pays it once here, untimed, so that neither side of the comparison pays it
np.load(sys.argv[2]).fill(0)
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # restart the peak (VmHWM) count here
t = time.perf_counter(); emb = store.load("scale-model", "scale-data"); first = time.perf_counter() - t
peak = status("VmHWM")
ok = bool(np.array_equal(emb.vectors[:1000], np.load(sys.argv[2], mmap_mode="r")[:1000]))
del emb
loads, nps = [first], []
for _ in range(3):  # side by side: np.load and embrm's load alternate, each into fresh memory
    t = time.perf_counter(); x = np.load(sys.argv[2]); nps.append(time.perf_counter() - t); del x
    t = time.perf_counter(); e = store.load("scale-model", "scale-data"); loads.append(time.perf_counter() - t); del e
print(json.dumps({"first": first, "loads": loads, "np_loads": nps, "rss_before_mb": before, "peak_mb": peak,
                  "ok": ok}))
"""


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=576)
    ap.add_argument("--chunk", type=int, default=50_000)
    ap.add_argument("--dir", default=None, help="where to build the store (default: a temp dir)")
    ap.add_argument("--json", default="store_scale.json")
    a = ap.parse_args()
    base = Path(a.dir or tempfile.mkdtemp(prefix="embrm-scale-"))
    base.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(base / "store", ignore_errors=True)
    rng = np.random.default_rng(0)
    n, d = a.rows, a.dim
    keys = [item_key("scale", str(i)) for i in range(n)]
    x = rng.standard_normal((n, d), dtype=np.float32)
    np.save(base / "x.npy", x)
    res: dict = {"rows": n, "dim": d, "array_bytes": x.nbytes}
    store = open_store(base / "store", create=True)
    mh, dh = "5" * 64, "6" * 64
    t = time.perf_counter()
    rows = ({"position": i, "item_key": keys[i], "prompt_id": i // 8, "response_index": i % 8, "role": "",
             "label": None, "reward": float(i % 7), "prompt": "scale", "response": str(i)} for i in range(n))
    store.rows.write(dh, rows, n)
    store.begin_entry(mh, "scale-model", {}, dh, "scale-data", {}, "multi", n)
    t_rows = time.perf_counter() - t
    t = time.perf_counter()
    for s in range(0, n, a.chunk):
        store.writer.write(mh, keys[s:s + a.chunk], {-1: x[s:s + a.chunk]}, np.full(min(a.chunk, n - s), 50),
                           np.zeros(min(a.chunk, n - s), bool))
    t_vec = time.perf_counter() - t
    t = time.perf_counter()
    e = store.finish_entry(mh, dh)
    t_finish = time.perf_counter() - t
    res["write"] = {"rows_table_s": t_rows, "vectors_s": t_vec, "finish_s": t_finish, "status": e.status}
    print(f"  wrote {n:,} rows in {t_rows + t_vec + t_finish:.1f} s (vectors {t_vec:.1f} s)", flush=True)
    res["disk_before_gc"] = du(base / "store")
    out = subprocess.run([sys.executable, "-c", LOAD, str(base / "store"), str(base / "x.npy")], capture_output=True,
                         text=True, check=True).stdout
    load = json.loads(out.strip().splitlines()[-1])
    assert load["ok"], "loaded vectors differ from the array written"
    t_np, t_load = min(load["np_loads"]), min(load["loads"])
    res["load"] = {**load, "np_load_s": t_np, "load_s": t_load}
    print(f"  load {t_load:.2f} s (first in the process {load['first']:.2f} s), np.load {t_np:.2f} s", flush=True)
    store = open_store(base / "store")
    ask = [keys[i] for i in rng.integers(0, n, 10_000)]
    t = time.perf_counter()
    got = store.vectors.point_read(mh, ask)
    t_first = time.perf_counter() - t
    t = time.perf_counter()
    got = store.vectors.point_read(mh, ask)
    t_again = time.perf_counter() - t
    idx = [int(k_i) for k_i in rng.integers(0, 10_000, 50)]
    assert got.found.all() and all(np.array_equal(got.vectors[-1][i], x[keys.index(ask[i])]) for i in idx[:5])
    res["point_reads"] = {"keys": 10_000, "first_s": t_first, "again_s": t_again}
    times = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "embrm.cli", "store", "ls", "--store", str(base / "store")],
                       capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    res["store_ls_s"] = min(times)
    t = time.perf_counter()
    gc = store.gc()
    res["gc"] = {"seconds": time.perf_counter() - t, **gc}
    res["disk_after_gc"] = du(base / "store")
    gb = x.nbytes / 1e9
    grow = load["peak_mb"] - load["rss_before_mb"]
    table_rows = [
        {"figure": "write (rows table + 20 commits + finish)", "value": f"{t_rows + t_vec + t_finish:.1f} s",
         "target": "", "ratio": f"{n / (t_rows + t_vec + t_finish):,.0f} rows/s"},
        {"figure": "load (best of 4, fresh process)", "value": f"{t_load:.2f} s", "target": ">= 0.5x np.load",
         "ratio": f"{t_np / t_load:.2f}x np.load ({gb / t_load:.2f} GB/s)"},
        {"figure": "load, first in the process", "value": f"{load['first']:.2f} s", "target": "",
         "ratio": f"{t_np / load['first']:.2f}x np.load"},
        {"figure": "np.load of the same array (best of 3)", "value": f"{t_np:.2f} s", "target": "",
         "ratio": f"{gb / t_np:.2f} GB/s"},
        {"figure": "peak memory of a load (process growth)", "value": f"{grow:,.0f} MB",
         "target": "<= 1.3x array", "ratio": f"{grow * 2**20 / x.nbytes:.2f}x the array"},
        {"figure": "get_vectors, 10k random keys, first call", "value": f"{t_first:.3f} s", "target": "",
         "ratio": f"{10_000 / t_first:,.0f} keys/s (builds the key index)"},
        {"figure": "get_vectors, 10k random keys, again", "value": f"{t_again:.3f} s", "target": ">= 100k keys/s",
         "ratio": f"{10_000 / t_again:,.0f} keys/s"},
        {"figure": "embrm store ls (whole command)", "value": f"{res['store_ls_s']:.2f} s", "target": "< 1 s",
         "ratio": ""},
        {"figure": "gc", "value": f"{res['gc']['seconds']:.1f} s", "target": "", "ratio": ""},
        {"figure": "disk, before gc", "value": f"{res['disk_before_gc'] / 1e9:.2f} GB", "target": "",
         "ratio": f"{res['disk_before_gc'] / x.nbytes:.2f}x the array"},
        {"figure": "disk, after gc", "value": f"{res['disk_after_gc'] / 1e9:.2f} GB", "target": "",
         "ratio": f"{res['disk_after_gc'] / x.nbytes:.2f}x the array"},
    ]
    print(machine_line())
    print(f"# one entry of {n:,} x {d} float32 ({gb:.2f} GB) in a local store; page cache warm")
    print(table(table_rows))
    print(f"wrote {write_json(a.json, {**res, 'table': table_rows})}")
    if a.dir is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
