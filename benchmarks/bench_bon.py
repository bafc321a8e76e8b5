"""Best-of-N evaluation speed: 2,000 prompts x 500 responses x 10 members.

Times the exact estimator for all default N (1..500) over every member and the five
aggregations, plus per-prompt Spearman. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from embrm.rm.metrics import AGGREGATIONS, DEFAULT_BON, aggregate, best_of_n, spearman_per_prompt

from _common import machine_line, table, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--json", default="bon.json")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    gold = rng.standard_normal((a.prompts, a.k))
    scores = gold + rng.standard_normal((a.members, a.prompts, a.k))
    ns = [n for n in DEFAULT_BON if n <= a.k]
    res = {}
    t = time.perf_counter()
    best_of_n(scores, gold, ns)
    res["BoN, every member separately"] = time.perf_counter() - t
    t = time.perf_counter()
    best_of_n(np.stack([aggregate(scores, h) for h in AGGREGATIONS]), gold, ns)
    res["BoN, 5 aggregations"] = time.perf_counter() - t
    t = time.perf_counter()
    spearman_per_prompt(aggregate(scores, "mean"), gold)
    res["Spearman per prompt (mean)"] = time.perf_counter() - t
    print(machine_line())
    print(f"# {a.prompts} prompts x {a.k} responses x {a.members} members, N = {ns}")
    print(table([{"what": k, "seconds": v} for k, v in res.items()], floatfmt="{:.2f}"))
    print(f"wrote {write_json(a.json, res)}")


if __name__ == "__main__":
    main()
