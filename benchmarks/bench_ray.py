"""The Ray engine against the local engine on the same items, and the driver's own costs.

* Throughput: the same HH-RLHF items (SmolLM2-135M-Instruct, the default settings) through
  the local engine and the Ray engine with 1 and 2 workers, each into a fresh store; each
  run is a fresh driver process, timed end to end and by its own report.
* Ray's fixed cost: ``ray.init`` + ``ray.shutdown`` of a local instance, and the time
  from the start to the first actor's model being loaded (taken from the runs).
* Commit overhead: 100,000 rows of 576-dim vectors written as fragments the way workers
  write them, then committed by the driver in intervals of 4,096 rows; against the local
  engine's commits of the same rows in windows of 1,024.
* Driver work per row: scanning and keying a dataset, writing its rows table and finding
  the missing keys (the plan), for 100,000 rows.

These figures feed the scaling model in docs/benchmarks.md. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from _common import machine_line, table, write_json

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def run(args: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "embrm.cli", "extract", "--quiet", *args], capture_output=True,
                         text=True, check=True, start_new_session=True).stdout
    return time.perf_counter() - t, out


def ray_fixed_cost() -> float:
    code = ("import time; t=time.perf_counter()\n"
            "from embrm.extractor.engines.ray import RayOptions, start_ray\n"
            "ray = start_ray(RayOptions()); ray.shutdown(); print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         start_new_session=True).stdout
    return float(out.strip().splitlines()[-1])


def commit_overhead(d: Path, rows: int = 100_000, dim: int = 576, task: int = 256, interval: int = 4096) -> dict:
    from embrm.store import item_key, open_store
    from embrm.store.vectors import VectorInfo, build_vector_table

    x = np.random.default_rng(0).standard_normal((rows, dim), dtype=np.float32)
    keys = [item_key("c", str(i)) for i in range(rows)]
    out = {}
    store = open_store(d / "frag", create=True)
    store.writer.ensure_table("7" * 64, VectorInfo(dim, "float32", (-1,)))
    pending, t_write, t_commit = [], 0.0, 0.0
    for s in range(0, rows, task):
        data = build_vector_table(keys[s:s + task], {-1: x[s:s + task]}, np.ones(min(task, rows - s)),
                                  np.zeros(min(task, rows - s), bool))
        t = time.perf_counter()
        pending.append((store.writer.write_fragments("7" * 64, data), keys[s:s + task]))
        t_write += time.perf_counter() - t
        if sum(len(k) for _, k in pending) >= interval or s + task >= rows:
            t = time.perf_counter()
            store.writer.commit_fragments("7" * 64, [f for fs, _ in pending for f in fs],
                                          pa.array([k for _, ks in pending for k in ks]))
            t_commit += time.perf_counter() - t
            pending = []
    out["fragments_write_s"], out["fragments_commit_s"] = t_write, t_commit
    store = open_store(d / "merge", create=True)
    t = time.perf_counter()
    for s in range(0, rows, 1024):
        store.writer.write("8" * 64, keys[s:s + 1024], {-1: x[s:s + 1024]}, np.ones(min(1024, rows - s)),
                           np.zeros(min(1024, rows - s), bool))
    out["merge_windows_s"] = time.perf_counter() - t
    return out


def driver_work(d: Path, rows: int = 100_000) -> dict:
    from embrm.extractor.datasets import DatasetSpec
    from embrm.extractor.plan import ExtractionPlan, scan_dataset
    from embrm.store import open_store

    data = d / "plan.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"prompt {i // 4}", "response": f"response number {i}"}) + "\n"
                            for i in range(rows)))
    t = time.perf_counter()
    scan = scan_dataset(DatasetSpec(str(data)))
    t_scan = time.perf_counter() - t
    store = open_store(d / "merge")  # a table holding 100,000 other keys (from commit_overhead)
    t = time.perf_counter()
    missing = store.vectors.missing("8" * 64, scan.keys)
    t_missing = time.perf_counter() - t
    plan = ExtractionPlan(scan, "8" * 64, "m", {}, missing)
    t = time.perf_counter()
    plan.register(store)
    t_register = time.perf_counter() - t
    return {"rows": rows, "scan_key_s": t_scan, "missing_s": t_missing, "register_s": t_register}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=300, help="HH-RLHF pairs (items = 2 x pairs)")
    ap.add_argument("--json", default="ray.json")
    a = ap.parse_args()
    if not HH.exists():
        raise SystemExit(f"needs {HH}")
    res: dict = {"items": 2 * a.pairs, "engines": {}}
    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        common = ["--dataset", str(HH), "--limit", str(a.pairs)]
        for name, extra in (("local", []), ("ray, 1 worker", ["--engine", "ray", "--num-workers", "1"]),
                            ("ray, 2 workers", ["--engine", "ray", "--num-workers", "2"]),
                            ("local (again)", [])):
            wall, out = run([*common, "--store", str(d / name.replace(" ", "_").replace(",", "")), *extra])
            computed = int(re.search(r"computed (\d+)", out).group(1))
            tok_s = float(re.search(r"([\d,]+) tok/s", out).group(1).replace(",", ""))
            res["engines"][name] = {"wall_s": wall, "computed": computed, "tok_s": tok_s}
            rows.append({"run": name, "items": computed, "wall s": wall, "items/s (wall)": computed / wall,
                         "tok/s (own report)": tok_s})
            print(f"  {name}: {wall:.1f} s wall, {tok_s:,.0f} tok/s", flush=True)
        res["ray_init_shutdown_s"] = ray_fixed_cost()
        res["commit"] = commit_overhead(d)
        res["driver"] = driver_work(d)
    c, dr = res["commit"], res["driver"]
    rows += [
        {"run": "Ray init + shutdown (local)", "wall s": res["ray_init_shutdown_s"]},
        {"run": "100k rows: workers write fragments", "wall s": c["fragments_write_s"]},
        {"run": "100k rows: driver commits (4,096-row intervals)", "wall s": c["fragments_commit_s"]},
        {"run": "100k rows: local engine's commits (1,024-row windows)", "wall s": c["merge_windows_s"]},
        {"run": "100k rows: driver scan + keys + hash", "wall s": dr["scan_key_s"]},
        {"run": "100k rows: missing-key set (against 100k stored)", "wall s": dr["missing_s"]},
        {"run": "100k rows: rows table + catalog entry", "wall s": dr["register_s"]},
    ]
    print(machine_line())
    print(f"# {2 * a.pairs} HH-RLHF items, SmolLM2-135M-Instruct, default settings; each run a fresh process "
          "into a fresh store")
    print(table(rows, ["run", "items", "wall s", "items/s (wall)", "tok/s (own report)"], floatfmt="{:,.2f}"))
    print(f"wrote {write_json(a.json, {**res, 'table': rows})}")


if __name__ == "__main__":
    main()
