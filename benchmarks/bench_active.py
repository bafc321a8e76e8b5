"""Active reward modeling: selection speed, the cost of one round, and the studies' targets.

Speed (synthetic data, so the numbers depend on sizes only):

* ``select``: greedy D-optimal selection of 1,000 pairs from 200,000 candidates with
  512-dimensional features (a linear reward model on 512-d Gaussian embeddings, whose
  features are the embeddings: the worst case for the lazy greedy, every direction alike),
  end to end through ``embrm.rm.active.select`` (candidate mask, Fisher vectors, greedy),
  and the greedy alone. Target: at most 5 s. Beside it the log-det of the greedy batch
  against one-shot top-k and a random batch. With ``--store``, the same on real features
  (a BT-MLP's 512-wide last hidden layer on a multi-response entry's vectors).
* ``round``: one round of the active loop at 5,000 labels: retrain the study's model
  from scratch (BT, one hidden layer of 64, 4 members), select 100 of 1,000 candidates
  with ``dopt-past`` (the 5,000 labelled pairs in the information matrix) and evaluate
  Best-of-N, Spearman and pairwise accuracy on 120 held-out prompts x 8 responses at
  D = 576 (SmolLM2-135M's width). Target: at most 15 s.

Studies (``--studies DIR``): reads the ``active.json`` of ``embrm reproduce active``
runs below DIR (and ``ensemble.json`` of ``embrm reproduce ensemble``) and checks the
research target: ``dopt`` reaches random's final Spearman with at most 60% of random's
labels and its mean is at or above random's at every budget. The studies themselves run
with the commands in docs/studies.md; this script only gathers them into one table.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from embrm.rm.active import greedy_logdet, information_logdet, ridge_lambda, select
from embrm.rm.models import EnsembleMLP
from embrm.rm.trainer import RewardModel, TrainConfig

from _common import machine_line, table, write_json


def bench_select(n_items: int, n_cand: int, dim: int, k: int, repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((n_items, dim)) * rng.gamma(2.0, 1.0, (n_items, 1))).astype(np.float32)
    a, b = rng.integers(0, n_items, n_cand), rng.integers(0, n_items, n_cand)
    b = np.where(a == b, (b + 1) % n_items, b)
    net = EnsembleMLP(1, dim, (), seed=0, bias=False)
    model = RewardModel(TrainConfig(method="linear"), dim, net=net.eval())
    end_to_end, greedy_only = [], []
    for _ in range(repeats):  # the best of a few: this shared machine only ever adds time
        t = time.perf_counter()
        pick = select("dopt", model, x, a, b, k)
        end_to_end.append(time.perf_counter() - t)
    from embrm.rm.active import fisher_vectors

    u, _ = fisher_vectors(model, x, a, b)
    lam = ridge_lambda(u, 1.0)
    for _ in range(repeats):
        t = time.perf_counter()
        greedy_logdet(u, k, lam)
        greedy_only.append(time.perf_counter() - t)
    top = np.argsort(-np.einsum("mcf,mcf->c", u, u))[:k]
    rand = rng.choice(n_cand, k, replace=False)
    return {"candidates": n_cand, "items": n_items, "dim": dim, "k": k, "select_s": min(end_to_end),
            "all_select_s": end_to_end, "greedy_s": min(greedy_only), "all_greedy_s": greedy_only,
            "logdet_greedy": information_logdet(u[:, pick], lam),
            "logdet_top_k": information_logdet(u[:, top], lam), "logdet_random": information_logdet(u[:, rand], lam)}


def bench_select_real(store_uri: str, model_key: str, dataset_key: str, n_cand: int, k: int,
                      repeats: int) -> dict[str, Any]:
    """The same selection on real features: a BT-MLP with a 512-wide last hidden layer,
    trained on 2,000 simulated labels of a multi-response entry, picks among ``n_cand``
    cross-prompt pairs of its responses (ReLU features: anisotropic, unlike the Gaussian
    pool above, so the lazy greedy re-scores less of the pool)."""
    from embrm.rm.experiment import from_embeddings
    from embrm.rm.pairs import build_pairs, split_prompts
    from embrm.rm.pools import cross_pairs
    from embrm.rm.trainer import train
    from embrm.store import open_store

    ds = from_embeddings(open_store(store_uri).load(model_key, dataset_key))
    tr, va = split_prompts(ds.n_prompts, 0.2, 0)
    tp = build_pairs(ds.gold, tr, 2000 // len(tr) + 1, "within", "random", -1.0, None, 0)
    vp = build_pairs(ds.gold, va, 4, "within", "random", -1.0, None, 1)
    model = train(ds.x, tp, vp, TrainConfig(hidden=(512,), lr=1e-3))
    a, b = cross_pairs(ds.item_prompt, np.arange(ds.n_prompts), n_cand, np.random.default_rng(0))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        select("dopt", model, ds.x, a, b, k)
        times.append(time.perf_counter() - t)
    return {"candidates": int(len(a)), "items": int(len(ds.x)), "dim": 512, "k": k, "select_s": min(times),
            "all_select_s": times, "entry": f"{model_key}/{dataset_key}"}


def bench_round(labels: int, repeats: int) -> dict[str, Any]:
    from embrm.pipeline.active_study import ActiveStudyConfig, Study, round_functions
    from embrm.rm.activeloop import LoopConfig, fit
    from embrm.rm.experiment import Dataset
    from embrm.rm.pairs import Pairs, annotate, split_prompts
    from embrm.rm.pools import within_pairs

    rng = np.random.default_rng(0)
    p, k, d = 600, 8, 576
    x = rng.standard_normal((p * k, d)).astype(np.float32)
    gold = (np.tanh(x @ rng.standard_normal(d) / 20) + 0.1 * np.abs(x[:, :3]).sum(1)).reshape(p, k)
    ds = Dataset(x, p, np.repeat(np.arange(p), k), gold=gold)
    cfg = ActiveStudyConfig()
    tr, held = split_prompts(p, cfg.val_frac, 0)
    candidates, _, evaluate = round_functions(Study(ds, tr, held, "spearman"), cfg, 0, None)
    a, b = within_pairs(ds.item_prompt, tr)
    take = rng.choice(len(a), labels, replace=False)
    la, lb = a[take], b[take]
    y = annotate(gold.reshape(-1)[la], gold.reshape(-1)[lb], -1.0)
    pairs = Pairs(la, lb, y, ds.item_prompt[la], ds.item_prompt[lb])
    tc = TrainConfig(method=cfg.method, ensemble=cfg.members, hidden=cfg.hidden, lr=cfg.lr, max_epochs=cfg.epochs)
    best: dict[str, Any] = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        model = fit(x, pairs, tc, LoopConfig(holdout=cfg.holdout), None)
        t1 = time.perf_counter()
        ca, cb = candidates(1)
        select("dopt-past", model, x, ca, cb, cfg.per_round, la, lb)
        t2 = time.perf_counter()
        m = evaluate(model)
        t3 = time.perf_counter()
        run = {"round_s": t3 - t0, "train_s": t1 - t0, "select_s": t2 - t1, "eval_s": t3 - t2,
               "epochs": model.log.epochs, "spearman": m["spearman"]}
        if not best or run["round_s"] < best["round_s"]:
            best = run
    return {"labels": labels, "candidates": cfg.candidates, "per_round": cfg.per_round, "members": cfg.members,
            "hidden": list(cfg.hidden), "dim": d, "held_out_items": len(held) * k, **best}


def gather_studies(root: Path) -> dict[str, Any]:
    """The ``active.json`` and ``ensemble.json`` files below ``root``: settings, summaries, targets."""
    out: dict[str, Any] = {"active": {}, "ensemble": {}}
    for f in sorted(root.rglob("active.json")):
        r = json.loads(f.read_text())
        vr = r.get("vs_random", {})
        dopt = vr.get("rules", {}).get("dopt", {})
        out["active"][str(f.parent.relative_to(root))] = {
            "kind": r["kind"], "config": r["config"], "primary": r["primary"], "summary": r["summary"],
            "vs_random": vr,
            "target_share_met": dopt.get("share_of_random_labels") is not None
            and dopt["share_of_random_labels"] <= 0.6,
            "target_every_budget_met": bool(dopt.get("mean_at_or_above_random_every_budget")),
        }
    for f in sorted(root.rglob("ensemble.json")):
        out["ensemble"][str(f.parent.relative_to(root))] = json.loads(f.read_text())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=200_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--labels", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--studies", type=Path, default=None, help="A folder of reproduce active/ensemble outputs.")
    ap.add_argument("--store", default=None, help="With --model-key/--dataset-key: also select on real features.")
    ap.add_argument("--model-key", default=None)
    ap.add_argument("--dataset-key", default=None)
    ap.add_argument("--json", default="active.json")
    a = ap.parse_args()
    load = [os.getloadavg()[0]]  # the machine is shared: what else ran is part of the result
    sel = bench_select(a.items, a.candidates, a.dim, a.k, a.repeats)
    print(sel, flush=True)
    real = None
    if a.store:
        real = bench_select_real(a.store, a.model_key, a.dataset_key, a.candidates, a.k, a.repeats)
        print(real, flush=True)
    rnd = bench_round(a.labels, a.repeats)
    print(rnd, flush=True)
    load.append(os.getloadavg()[0])
    rows = [{"benchmark": f"dopt select {a.k} of {a.candidates:,} (F={a.dim}), end to end", "seconds": sel["select_s"],
             "target_s": 5.0, "met": sel["select_s"] <= 5.0},
            {"benchmark": "  greedy log-det alone", "seconds": sel["greedy_s"], "target_s": None, "met": None},
            *([{"benchmark": f"dopt select {a.k} of {real['candidates']:,} cross pairs, BT-MLP features (F=512)",
                "seconds": real["select_s"], "target_s": 5.0, "met": real["select_s"] <= 5.0}] if real else []),
            {"benchmark": f"one round at {a.labels:,} labels (train + dopt-past select + evaluate)",
             "seconds": rnd["round_s"], "target_s": 15.0, "met": rnd["round_s"] <= 15.0},
            {"benchmark": "  train / select / evaluate",
             "seconds": None, "target_s": None, "met": f"{rnd['train_s']:.2f} / {rnd['select_s']:.2f} / "
                                                       f"{rnd['eval_s']:.2f} s"}]
    payload: dict[str, Any] = {"select": sel, "select_real": real, "round": rnd, "rows": rows, "load_average": load}
    print(machine_line())
    print(f"# 1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end (2 cores)")
    print(table(rows, floatfmt="{:.2f}"))
    print(f"# log-det gain of the {a.k} pairs: greedy {sel['logdet_greedy']:.1f}, one-shot top-k "
          f"{sel['logdet_top_k']:.1f}, random {sel['logdet_random']:.1f}")
    if a.studies:
        payload["studies"] = studies = gather_studies(a.studies)
        srows = []
        for name, s in studies["active"].items():
            d = s["vs_random"].get("rules", {}).get("dopt")
            if d is None:
                continue
            srows.append({"study": name, "metric": s["primary"], "random final": s["vs_random"]["random_final"],
                          "dopt labels to reach it": d["labels_to_reach_random_final"],
                          "share (target <= 60%)": d["share_of_random_labels"],
                          "dopt mean >= random every budget": d["mean_at_or_above_random_every_budget"],
                          "budgets dopt significantly below": len(d["budgets_below_random"])})
        print(table(srows))
    print(f"wrote {write_json(a.json, payload)}")


if __name__ == "__main__":
    main()
