"""Reward models on small real data: embrm's defaults against two plain references.

HH-RLHF harmless-base test pairs, SmolLM2-135M-Instruct last-token vectors in fp32, all
methods on the same stored vectors. At each size (300, 600, 1,200 and every pair), a
seeded subset of pairs is split into 5 prompt-disjoint folds (a prompt's pairs are all in
one fold, prompts by text). Each fold is held out once; the rest trains, with 20% of its
prompts held out for early stopping by every method that stops early.

* embrm BT, CLF and linear ensembles with their default settings (``TrainConfig()``);
* reference (a): a plain BT-MLP trained the seed paper's way, written out here in plain
  torch: D -> 1024 -> 512 -> 1, Adam 1e-3, batch 256, both orderings of every pair, 30
  epochs, the best validation epoch kept;
* reference (b): L2-regularised logistic regression on difference vectors (scikit-learn,
  both orderings, no intercept, standardised features, C chosen by log-loss in 5-fold CV
  within the training part).

Reported: each fold's held-out pairwise accuracy, the 5-fold mean, and a paired
bootstrap 95% interval of (embrm BT - best reference) over the pooled held-out pairs.
``--repeats R`` repeats the whole cross-validation with R subsets and splits (repeated
k-fold), for sizes where one split's noise is as large as the differences.
Needs scikit-learn (a benchmark-only dependency) and ../shared/data/hh-rlhf.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from embrm.extractor import DatasetSpec, EmbeddingSpec, ExtractConfig, RunOptions, extract
from embrm.rm import TrainConfig, aggregate, train
from embrm.rm.pairs import Pairs, split_prompts
from embrm.store import open_store

from _common import machine_line, table, write_json

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def folds_by_prompt(prompt: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index of every pair; all pairs of a prompt share a fold."""
    uniq = np.unique(prompt)
    fold_of = dict(zip(np.random.default_rng(seed).permutation(uniq).tolist(), np.arange(len(uniq)) % k))
    return np.array([fold_of[p] for p in prompt.tolist()])


def random_order(idx: np.ndarray, prompt: np.ndarray, seed: int) -> Pairs:
    """Pairs idx (chosen item 2i, rejected 2i + 1) shown in random order."""
    swap = np.random.default_rng(seed).random(len(idx)) < 0.5
    c, r = 2 * idx, 2 * idx + 1
    return Pairs(np.where(swap, r, c), np.where(swap, c, r), np.where(swap, 0.0, 1.0).astype(np.float32),
                 prompt[idx])


def split_train_val(idx: np.ndarray, prompt: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """20% of the training part's prompts for early stopping."""
    uniq, inv = np.unique(prompt[idx], return_inverse=True)
    tr, va = split_prompts(len(uniq), 0.2, seed)
    return idx[np.isin(inv, tr)], idx[np.isin(inv, va)]


def seed_bt_mlp(x: np.ndarray, tr: Pairs, va: Pairs, seed: int) -> np.ndarray:
    """Reference (a): one plain BT-MLP the seed paper's way; returns item scores."""
    torch.manual_seed(seed)
    d = x.shape[1]
    net = torch.nn.Sequential(torch.nn.Linear(d, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 512),
                              torch.nn.ReLU(), torch.nn.Linear(512, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xt = torch.from_numpy(x)
    a = np.concatenate([tr.a, tr.b])  # both orderings of every pair
    b = np.concatenate([tr.b, tr.a])
    y = torch.from_numpy(np.concatenate([tr.y, 1 - tr.y]))
    rng = np.random.default_rng(seed)

    def val_loss() -> float:
        with torch.no_grad():
            s = net(xt).squeeze(-1)
            return float(torch.nn.functional.binary_cross_entropy_with_logits(
                s[va.a] - s[va.b], torch.from_numpy(va.y)))

    best, best_state = np.inf, None
    for _ in range(30):
        perm = rng.permutation(len(a))
        for s in range(0, len(a), 256):
            i = perm[s:s + 256]
            out = net(xt[a[i]]).squeeze(-1) - net(xt[b[i]]).squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out, y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
        v = val_loss()
        if v < best:
            best, best_state = v, {k: t.clone() for k, t in net.state_dict().items()}
    net.load_state_dict(best_state)
    with torch.no_grad():
        return net(xt).squeeze(-1).numpy()


def logistic_diff(x: np.ndarray, tr: Pairs) -> np.ndarray:
    """Reference (b): L2 logistic regression on difference vectors; returns item scores."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.preprocessing import StandardScaler

    items = np.unique(np.concatenate([tr.a, tr.b]))
    scaler = StandardScaler().fit(x[items])
    z = scaler.transform(x)
    diff = np.concatenate([z[tr.a] - z[tr.b], z[tr.b] - z[tr.a]])
    y = np.concatenate([tr.y, 1 - tr.y])
    import inspect

    kw = {"Cs": np.logspace(-4, 1, 11), "cv": 5, "fit_intercept": False, "max_iter": 5000, "scoring": "neg_log_loss"}
    params = inspect.signature(LogisticRegressionCV).parameters
    if "l1_ratios" in params:  # scikit-learn >= 1.8 spells "L2" this way
        kw.update(l1_ratios=(0.0,), use_legacy_attributes=False)
    lr = LogisticRegressionCV(**kw)
    lr.fit(diff, y)
    return z @ lr.coef_[0]


def correct(scores: np.ndarray, te: Pairs) -> np.ndarray:
    d = scores[te.a] - scores[te.b]
    return np.where(d == 0, 0.5, (d > 0) == (te.y > 0.5)).astype(float)


def paired_bootstrap(diff: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (reps, len(diff)))].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="benchmarks/.hh-store-fp32")
    ap.add_argument("--sizes", default="300,600,1200,all")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--methods", default="bt,clf,linear,seed-bt-mlp,logistic",
                    help="embrm methods take a learning rate after @, e.g. bt@1e-3")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1, help="repeated k-fold: each repeat a new subset and split")
    ap.add_argument("--json", default="small_data.json")
    a = ap.parse_args()
    if not HH.exists():
        raise SystemExit(f"needs {HH}")
    r = extract(ExtractConfig(DatasetSpec(str(HH)), EmbeddingSpec(dtype="float32"), RunOptions(store=a.store)))
    print(r.report(), flush=True)
    emb = open_store(a.store).load(r.model_hash, r.dataset_hash)
    v, prompt = emb.pairwise()  # (pairs, 2, D), chosen first; prompt ids by prompt text
    x = np.ascontiguousarray(v.reshape(-1, v.shape[-1]), dtype=np.float32)
    n_all = len(v)
    methods = a.methods.split(",")
    rows, out = [], {"pairs": n_all, "model": r.model_name, "sizes": {}}
    for size in a.sizes.split(","):
        n = n_all if size == "all" else int(size)
        per: dict[str, list[np.ndarray]] = {m: [] for m in methods}
        for rep in range(a.repeats):  # repeated k-fold: another subset and another fold split each time
            seed = a.seed + 1000 * rep
            subset = np.sort(np.random.default_rng(seed).permutation(n_all)[:n])
            fold = folds_by_prompt(prompt[subset], a.folds, seed)
            for f in range(a.folds):
                test_idx = subset[fold == f]
                tr_idx, va_idx = split_train_val(subset[fold != f], prompt, seed + f)
                tr, va = random_order(tr_idx, prompt, seed + f), random_order(va_idx, prompt, seed + 100 + f)
                te = random_order(test_idx, prompt, seed + 200 + f)
                for m in methods:
                    t = time.perf_counter()
                    if m.split("@")[0] in ("bt", "clf", "linear"):  # "bt@1e-3": BT with that learning rate
                        method, _, lr = m.partition("@")
                        cfg = TrainConfig(method=method, ensemble=a.members, seed=seed + f)
                        model = train(x, tr, va, replace(cfg, lr=float(lr)) if lr else cfg)
                        s = aggregate(model.score(x), "mean")
                    elif m == "seed-bt-mlp":
                        s = seed_bt_mlp(x, tr, va, seed + f)
                    else:
                        full = random_order(np.concatenate([tr_idx, va_idx]), prompt, seed + f)
                        s = logistic_diff(x, full)
                    per[m].append(correct(s, te))
                    print(f"  n={n} repeat {rep} fold {f} {m:12s} acc {per[m][-1].mean():.3f} "
                          f"({time.perf_counter() - t:.1f} s)", flush=True)
        accs = {m: [float(c.mean()) for c in per[m]] for m in methods}
        means = {m: float(np.mean(accs[m])) for m in methods}
        refs = [m for m in ("seed-bt-mlp", "logistic") if m in methods]
        res = {"n": n, "folds": accs, "mean": means}
        if "bt" in methods and refs:
            best_ref = max(refs, key=lambda m: means[m])
            diff = np.concatenate(per["bt"]) - np.concatenate(per[best_ref])
            lo, hi = paired_bootstrap(diff, seed=a.seed)
            res.update(best_reference=best_ref, bt_minus_best=float(diff.mean()), ci95=[lo, hi])
        out["sizes"][str(n)] = res
        row = {"pairs": n, **{m: means[m] for m in methods}}
        if "ci95" in res:
            row["bt - best ref"] = f"{res['bt_minus_best']:+.3f} [{res['ci95'][0]:+.3f}, {res['ci95'][1]:+.3f}]"
        rows.append(row)
    print()
    print(machine_line())
    print(f"# HH-RLHF harmless-base test, {n_all} pairs, {a.folds}-fold prompt-disjoint CV x {a.repeats}; "
          f"{r.model_name}; embrm ensembles of {a.members} with default settings; mean held-out pairwise accuracy")
    print(table(rows))
    print(f"wrote {write_json(a.json, out)}")


if __name__ == "__main__":
    main()
