"""Batched ensemble vs the same members trained one after another, same settings.

Both sides use ``embrm.rm.trainer`` with identical settings (fixed epochs, no early
stopping, bf16 where native): one run with ``ensemble=M`` against M runs with
``ensemble=1`` and seeds 0..M-1. Three models: the seed paper's D->1024->512->1 MLP with
batch 1024 (compute-bound: each member's matmuls already fill a small CPU), a small
D->64->1 MLP with batch 256 and a linear model (overhead- and memory-bound, where
batching members pays). The batched run uses the default member groups (as many members
per batched matmul as fit the cache); "one group" puts all M in one batched matmul.
Data as in ``bench_rm.py``. Each side runs ``--repeats`` times,
alternating, and the best time counts, because this small machine is shared and noisy.

The "matmul floor" column is what the ensemble's matmuls alone cost at the rate this
machine gives one member's shapes: every forward and backward GEMM of every step, timed
with ``torch.mm``, times steps, epochs and members. Batching members does not remove any
of those FLOPs, so ``sequential / floor`` is the most any batched trainer could gain
here without running the GEMMs themselves faster.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from bench_rm import data

from embrm.rm import TrainConfig, train
from embrm.rm.metrics import pairwise_accuracy
from embrm.rm.models import members_per_group
from embrm.rm.trainer import _use_bf16

from _common import machine_line, table, write_json


def _mm_seconds(m: int, k: int, n: int, dtype: torch.dtype, reps: int = 5) -> float:
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):  # the best of a few: this shared machine only ever adds time
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return best


def matmul_floor(dim: int, hidden: tuple[int, ...], batch: int, n_train: int, n_val_items: int, epochs: int,
                 members: int, dtype: torch.dtype) -> float:
    """Seconds of GEMM work in training ``members`` MLPs, at one member's shapes (see module doc)."""
    sizes = [dim, *hidden, 1]
    rows = 2 * batch  # both sides of each pair
    step = 0.0
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        step += _mm_seconds(rows, d_in, d_out, dtype)  # forward
        step += _mm_seconds(d_in, rows, d_out, dtype)  # weight gradient
        if i > 0:
            step += _mm_seconds(rows, d_out, d_in, dtype)  # input gradient
    val = sum(_mm_seconds(n_val_items, d_in, d_out, dtype) for d_in, d_out in zip(sizes[:-1], sizes[1:]))
    steps = -(-n_train // batch)
    return members * epochs * (steps * step + val)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", default="576,2048")
    ap.add_argument("--pairs", type=int, default=20_000)
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default="ensemble.json")
    a = ap.parse_args()
    rows = []
    models = {"bt 1024,512 / batch 1024": ("bt", (1024, 512), 1024), "bt 64 / batch 256": ("bt", (64,), 256),
              "linear / batch 1024": ("linear", (), 1024)}
    for dim, (name, (method, hidden, batch)) in ((int(d), m) for d in a.dims.split(",") for m in models.items()):
        x, tr, va = data(dim, a.pairs, 5000)
        bf16 = torch.bfloat16 if _use_bf16(None) else torch.float32
        cfg = dict(method=method, hidden=hidden, batch_size=batch, max_epochs=a.epochs, patience=a.epochs + 1,
                   lr=1e-3)
        batched, one_group, sequential = [], [], []
        for _ in range(a.repeats):
            t = time.perf_counter()
            m = train(x, tr, va, TrainConfig(ensemble=a.members, **cfg))
            batched.append(time.perf_counter() - t)
            t = time.perf_counter()
            train(x, tr, va, TrainConfig(ensemble=a.members, member_group=a.members, **cfg))
            one_group.append(time.perf_counter() - t)
            t = time.perf_counter()
            seq = [train(x, tr, va, TrainConfig(ensemble=1, seed=s, **cfg)) for s in range(a.members)]
            sequential.append(time.perf_counter() - t)
        sb = m.score(x).mean(0)
        ss = np.mean([r.score(x)[0] for r in seq], 0)
        floor = matmul_floor(dim, hidden, batch, len(tr), 2 * len(va), a.epochs, a.members, bf16)
        row = {"dim": dim, "model": name, "members": a.members, "epochs": a.epochs, "batched_s": min(batched),
               "sequential_s": min(sequential), "all_batched_s": batched, "all_sequential_s": sequential,
               "group": members_per_group(a.members, 2 * batch, hidden, 2 if bf16 == torch.bfloat16 else 4),
               "one_group_s": min(one_group), "all_one_group_s": one_group,
               "speedup": min(sequential) / min(batched), "matmul_floor_s": floor,
               "speedup_ceiling": min(sequential) / floor,
               "acc_batched": pairwise_accuracy(sb[va.a], sb[va.b], va.y),
               "acc_sequential": pairwise_accuracy(ss[va.a], ss[va.b], va.y)}
        rows.append(row)
        print(row, flush=True)
    print(machine_line())
    print(f"# {a.pairs} pairs, {a.members} members, {a.epochs} epochs each, best of {a.repeats}")
    print(table([{"D": r["dim"], "model / batch": r["model"], "sequential (s)": r["sequential_s"],
                  "batched (s)": r["batched_s"], "group": r["group"], "one group (s)": r["one_group_s"],
                  "speed-up": r["speedup"], "matmul floor (s)": r["matmul_floor_s"],
                  "ceiling": r["speedup_ceiling"], "acc seq": r["acc_sequential"], "acc batched": r["acc_batched"]}
                 for r in rows], floatfmt="{:.2f}"))
    print(f"wrote {write_json(a.json, {'rows': rows})}")


if __name__ == "__main__":
    main()
