"""Batched ensemble vs the same members trained one after another, same settings.

Both sides use ``embrm.rm.train`` with identical settings (fixed epochs, no early
stopping, bf16 autocast where native): one run with ``ensemble=M`` against M runs with
``ensemble=1`` and seeds 0..M-1. Two model sizes: the seed paper's D->1024->512->1 MLP
with batch 1024 (compute-bound: each member's matmuls already fill a small CPU), and a
small D->64->1 MLP with batch 256 (overhead-bound, where batching members pays). Data as
in ``bench_rm.py``. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from bench_rm import data
from embrm.rm import TrainConfig, train
from embrm.rm.metrics import pairwise_accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", default="576,2048")
    ap.add_argument("--pairs", type=int, default=20_000)
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--json", default="benchmarks/results/ensemble.json")
    a = ap.parse_args()
    rows = []
    sizes = {"1024,512 / batch 1024": ((1024, 512), 1024), "64 / batch 256": ((64,), 256)}
    for dim, (size, (hidden, batch)) in ((int(d), sz) for d in a.dims.split(",") for sz in sizes.items()):
        x, tr, va = data(dim, a.pairs, 5000)
        cfg = dict(method="bt", hidden=hidden, batch_size=batch, max_epochs=a.epochs, patience=a.epochs + 1)
        t = time.perf_counter()
        m = train(x, tr, va, TrainConfig(ensemble=a.members, **cfg))
        batched = time.perf_counter() - t
        sb = m.score(x).mean(0)
        t = time.perf_counter()
        seq_scores = [train(x, tr, va, TrainConfig(ensemble=1, seed=s, **cfg)).score(x)[0] for s in range(a.members)]
        sequential = time.perf_counter() - t
        ss = np.mean(seq_scores, 0)
        row = {"dim": dim, "mlp": size, "members": a.members, "epochs": a.epochs, "batched_s": batched, "sequential_s": sequential,
               "speedup": sequential / batched, "acc_batched": pairwise_accuracy(sb[va.a], sb[va.b], va.y),
               "acc_sequential": pairwise_accuracy(ss[va.a], ss[va.b], va.y)}
        rows.append(row)
        print(row, flush=True)
    print(f"\n# {a.pairs} pairs, {a.members} members, {a.epochs} epochs each; {platform.machine()}, {os.cpu_count()} "
          f"cores, torch {torch.__version__}")
    print(f"{'D':>5s} {'hidden / batch':22s} {'sequential (s)':>15s} {'batched (s)':>12s} {'speed-up':>9s} "
          f"{'acc seq':>8s} {'acc batched':>12s}")
    for r in rows:
        print(f"{r['dim']:5d} {r['mlp']:22s} {r['sequential_s']:15.1f} {r['batched_s']:12.1f} {r['speedup']:8.1f}x "
              f"{r['acc_sequential']:8.3f} {r['acc_batched']:12.3f}")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
