"""Reward-model training speed: embrm's batched ensemble vs a seed-style loop, side by side.

Data: synthetic embeddings with a known nonlinear reward, 20k training pairs, at
D = 576 (SmolLM2) and D = 2048 (Gemma-2B size).

* seed-style: members one after another, fp32, D->1024->512->1 MLP, Adam 1e-3, batch
  10240, 30 epochs, a fresh random permutation index per step, both orderings of every
  pair (so 40k ordered pairs);
* embrm: ``embrm.rm.trainer`` with every member in one batched model, bf16 matmuls where
  the CPU has native bf16, one ordering per pair, early stopping (patience 3).

The seed loop is timed on ``--seed-members`` members and its ensemble time is that
times the member count: members are independent and identical in cost, so the time is
linear in their number. Held-out accuracy is the mean-aggregated pairwise accuracy on
5k validation pairs with perfect labels. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from embrm.rm import TrainConfig, train
from embrm.rm.metrics import pairwise_accuracy
from embrm.rm.pairs import Pairs

from _common import machine_line, table, write_json


def data(dim: int, n_pairs: int, n_val: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_items = 2 * (n_pairs + n_val)
    x = rng.standard_normal((n_items, dim)).astype(np.float32)
    w1, w2 = rng.standard_normal((2, dim)) / np.sqrt(dim)
    r = np.tanh(x @ w1) * 2 + (x @ w2)
    a = np.arange(0, n_items, 2)
    b = a + 1
    y = (r[a] > r[b]).astype(np.float32)
    pid = np.arange(len(a))
    tr = Pairs(a[:n_pairs], b[:n_pairs], y[:n_pairs], pid[:n_pairs])
    va = Pairs(a[n_pairs:], b[n_pairs:], y[n_pairs:], pid[n_pairs:])
    return x, tr, va


def seed_member(x: np.ndarray, tr: Pairs, seed: int, epochs: int = 30, batch: int = 10240):
    """One member the seed paper's way, written out plainly."""
    torch.manual_seed(seed)
    d = x.shape[1]
    net = nn.Sequential(nn.Linear(d, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xt = torch.from_numpy(x)
    a = torch.from_numpy(np.concatenate([tr.a, tr.b]))  # both orderings of every pair
    b = torch.from_numpy(np.concatenate([tr.b, tr.a]))
    y = torch.from_numpy(np.concatenate([tr.y, 1 - tr.y]))
    n = len(a)
    for _ in range(epochs):
        for _ in range(0, n, batch):
            idx = torch.randint(0, n, (batch,))  # a random index per step, as the seed code does
            logit = net(xt[a[idx]]).squeeze(-1) - net(xt[b[idx]]).squeeze(-1)
            loss = F.binary_cross_entropy_with_logits(logit, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.inference_mode():
        return net(xt).squeeze(-1).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", default="576,2048")
    ap.add_argument("--pairs", type=int, default=20_000)
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--seed-members", type=int, default=1)
    ap.add_argument("--json", default="rm.json")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    results = []
    for dim in (int(d) for d in a.dims.split(",")):
        x, tr, va = data(dim, a.pairs, 5000)
        t = time.perf_counter()
        seed_scores = [seed_member(x, tr, s) for s in range(a.seed_members)]
        per_member = (time.perf_counter() - t) / a.seed_members
        seed_acc = pairwise_accuracy(np.mean(seed_scores, 0)[va.a], np.mean(seed_scores, 0)[va.b], va.y)
        t = time.perf_counter()
        m = train(x, tr, va, TrainConfig(method="bt", ensemble=a.members, batch_size=1024, max_epochs=30, patience=3,
                                          lr=1e-3))
        ours = time.perf_counter() - t
        s = m.score(x).mean(0)
        ours_acc = pairwise_accuracy(s[va.a], s[va.b], va.y)
        row = {"dim": dim, "members": a.members, "seed_s_per_member": per_member,
               "seed_ensemble_s": per_member * a.members, "seed_members_timed": a.seed_members,
               "seed_acc": seed_acc, "embrm_s": ours, "embrm_epochs": m.log.epochs, "embrm_acc": ours_acc,
               "speedup": per_member * a.members / ours}
        results.append(row)
        print(f"D={dim}: seed {per_member:.1f} s/member -> {per_member * a.members:.0f} s for {a.members}; "
              f"embrm {ours:.1f} s ({m.log.epochs} epochs); acc seed {seed_acc:.3f} embrm {ours_acc:.3f}", flush=True)
    print(machine_line())
    print(f"# {a.pairs} train pairs, {a.members} members")
    print(table([{"D": r["dim"], "seed-style (s)": r["seed_ensemble_s"], "embrm (s)": r["embrm_s"],
                  "speed-up": r["speedup"], "acc seed": r["seed_acc"], "acc embrm": r["embrm_acc"]}
                 for r in results], floatfmt="{:.3f}"))
    print(f"wrote {write_json(a.json, {'results': results})}")


if __name__ == "__main__":
    main()
