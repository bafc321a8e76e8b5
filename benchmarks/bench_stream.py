"""Streaming: peak memory at two dataset sizes, and the all-cached path per 10k rows.

* Extracts a synthetic pointwise dataset of N and 4N rows with the default model, each in
  a fresh subprocess, and reports the subprocess's peak RSS. Rows stream from disk and
  vectors leave per window, so the peak should not grow with N.
* Re-runs extraction on a second file holding the same items in another order (a new
  dataset whose every item is cached): the model is never loaded. Reports the time of
  the ``extract()`` call itself per 10k rows.

Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import machine_line, table, write_json

CHILD = """
import json, sys, time, resource
from embrm.extractor import DatasetSpec, ExtractConfig, RunOptions, extract
t = time.perf_counter()
r = extract(ExtractConfig(DatasetSpec(sys.argv[1]), run=RunOptions(store=sys.argv[2], quiet=True,
                                                                   window=int(sys.argv[3]))))
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "computed": r.computed, "cached": r.cached, "model_loaded": r.model_loaded,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

WORDS = ("kind helpful answer question friendly weather garden river music story simple quick bright calm "
         "reason people morning evening travel letter window ocean forest mountain coffee").split()


def write_rows(path: Path, n: int, seed: int, shuffle: bool = False) -> None:
    rng = random.Random(seed)
    recs = [{"prompt": f"Question {i}: tell me about {rng.choice(WORDS)}.",
             "response": " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30)))} for i in range(n)]
    if shuffle:
        random.Random(seed + 1).shuffle(recs)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def run(data: Path, store: Path, window: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(data), str(store), str(window)], capture_output=True,
                         text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2500, help="the small size N; the large one is 4N")
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--json", default="stream.json")
    a = ap.parse_args()
    res = {}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for n in (a.rows, 4 * a.rows):
            data = d / f"rows{n}.jsonl"
            write_rows(data, n, seed=n)
            res[f"extract {n} rows"] = {"rows": n, **run(data, d / f"store{n}", a.window)}
            print(res[f"extract {n} rows"], flush=True)
        n = 4 * a.rows
        again = d / "same-items-shuffled.jsonl"
        write_rows(again, n, seed=n, shuffle=True)
        r = run(again, d / f"store{n}", a.window)
        res["all cached"] = {"rows": n, **r, "seconds_per_10k_rows": r["seconds"] / n * 10_000}
        print(res["all cached"], flush=True)
    print(machine_line())
    print("# SmolLM2-135M-Instruct, synthetic pointwise rows, each run a fresh process")
    print(table([{"run": k, "rows": v["rows"], "computed": v["computed"], "cached": v["cached"],
                  "seconds": v["seconds"], "peak RSS MB": v["peak_rss_mb"]} for k, v in res.items()],
                floatfmt="{:.2f}"))
    print(f"all cached: {res['all cached']['seconds_per_10k_rows']:.2f} s per 10k rows, model loaded: "
          f"{res['all cached']['model_loaded']}")
    print(f"wrote {write_json(a.json, res)}")


if __name__ == "__main__":
    main()
