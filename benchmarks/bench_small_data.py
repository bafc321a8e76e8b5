"""Reward models on small real data: embrm's methods and ``--tune`` against two plain references.

HH-RLHF harmless-base test pairs, SmolLM2-135M-Instruct last-token vectors in fp32, all
methods on the same stored vectors. At each size (300, 600, 1,200 and every pair), a
seeded subset of pairs is split into 5 prompt-disjoint folds (a prompt's pairs are all in
one fold, prompts by text). Each fold is held out once; the rest trains, with 20% of its
prompts held out as the validation split (early stopping, lambda, ``--tune``'s choice).

Methods (``--methods``, comma-separated):

* embrm's ``bt``, ``clf``, ``linear``, ``lgbm``, ``logreg``, ``logreg-clf`` as
  ``train(..., TrainConfig(...))`` runs them, ensembles of ``--members``. Suffixes:
  ``:M`` an ensemble of M instead, ``@LR`` a learning rate, ``+std`` / ``-std``
  standardised features or not (default: the method's default);
* ``tune``: what ``embrm train --tune`` does (:func:`embrm.rm.tune.tune`, then the chosen
  setting trains an ensemble of ``--members``): below ``INNER_BELOW`` pairs the setting
  is judged on 5 inner prompt-disjoint folds; ``tune-split`` judges it on the one
  validation split at every size (``--tune`` before the inner folds), for comparison;
* reference ``seed-bt-mlp``: a plain BT-MLP trained the seed paper's way, written out here
  in plain torch: D -> 1024 -> 512 -> 1, Adam 1e-3, batch 256, both orderings of every
  pair, 30 epochs, the best validation epoch kept;
* reference ``ref-logreg``: L2 logistic regression on standardised difference vectors
  written with scikit-learn, independently of embrm's solver: features standardised by
  the training items' mean and std, no intercept, both orderings of every pair, lambda
  from embrm's grid chosen by log-loss on the validation split, refitted on training +
  validation at that lambda.

Reported: mean held-out pairwise accuracy and log-loss per method, a paired bootstrap
95% interval (2,000 resamples of the pooled held-out pairs) of ``tune`` (and of embrm
``bt``) minus the better reference, what ``tune`` picked in each fold and how long it
took, and how far ``logreg:1`` is from ``ref-logreg`` fold by fold. ``--repeats R``
repeats the whole cross-validation with R subsets and splits (repeated k-fold).
Needs scikit-learn (a benchmark-only dependency) and ../shared/data/hh-rlhf.
"""
from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embrm.extractor import DatasetSpec, EmbeddingSpec, ExtractConfig, RunOptions, extract
from embrm.rm import TrainConfig, aggregate, train
from embrm.rm.logreg import LAMBDAS
from embrm.rm.metrics import bootstrap_interval
from embrm.rm.pairs import Pairs, split_prompts
from embrm.rm.tune import choose, describe, inner_folds_for
from embrm.rm.tune import tune as tune_grid
from embrm.store import open_store

from _common import machine_line, table, write_json

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
REFERENCES = ("seed-bt-mlp", "ref-logreg")
SPEC = re.compile(r"^(?P<name>[a-z]+(?:-(?!std$)[a-z]+)*)(?::(?P<members>\d+))?(?:@(?P<lr>[0-9.e+-]+?))?"
                  r"(?P<std>[+-]std)?$")


@dataclass
class Method:
    """One column of the table: a method name and the settings its spec overrides."""

    spec: str
    name: str
    members: int
    lr: float | None
    standardize: bool | None

    @classmethod
    def parse(cls, spec: str, members: int) -> Method:
        m = SPEC.match(spec)
        if not m:
            raise SystemExit(f"bad method spec {spec!r}: name[:members][@lr][+std|-std]")
        std = {None: None, "+std": True, "-std": False}[m["std"]]
        return cls(spec, m["name"], int(m["members"] or members), float(m["lr"]) if m["lr"] else None, std)

    def config(self, seed: int) -> TrainConfig:
        method = "bt" if self.name.startswith("tune") else self.name
        cfg = TrainConfig(method=method, ensemble=self.members, seed=seed, standardize=self.standardize)
        return replace(cfg, lr=self.lr) if self.lr else cfg


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
    """20% of the training part's prompts for validation."""
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


def ref_logreg(x: np.ndarray, tr: Pairs, va: Pairs) -> tuple[np.ndarray, float]:
    """Reference (b): scikit-learn's L2 logistic regression on standardised difference
    vectors, lambda chosen on ``va`` by log-loss, refitted on ``tr`` + ``va``.

    scikit-learn minimises C * sum(log-loss) + |w|^2 / 2; embrm's lambda is the penalty on
    the *mean* log-loss, so C = 1 / (lambda * rows). Returns item scores and the lambda.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    items = np.unique(np.concatenate([tr.a, tr.b]))
    z = (x - x[items].mean(0, dtype=np.float64)) / x[items].std(0, dtype=np.float64)

    def fit(p: Pairs, lam: float) -> np.ndarray:
        diff = np.concatenate([z[p.a] - z[p.b], z[p.b] - z[p.a]])  # both orderings: the same mean loss
        y = np.concatenate([p.y, 1 - p.y])
        lr = LogisticRegression(C=1.0 / (lam * len(y)), fit_intercept=False, tol=1e-10, max_iter=100_000)
        return lr.fit(diff, y).coef_[0]

    def val(w: np.ndarray) -> float:
        d = (z[va.a] - z[va.b]) @ w
        return log_loss(va.y, 1 / (1 + np.exp(-d)), labels=[0, 1])

    lam = min(LAMBDAS, key=lambda lam: val(fit(tr, lam)))
    both = Pairs(*(np.concatenate([getattr(tr, f), getattr(va, f)]) for f in ("a", "b", "y", "prompt")))
    return z @ fit(both, lam), lam


def correct(scores: np.ndarray, te: Pairs) -> np.ndarray:
    d = scores[te.a] - scores[te.b]
    return np.where(d == 0, 0.5, (d > 0) == (te.y > 0.5)).astype(float)


def log_loss(scores: np.ndarray, te: Pairs) -> np.ndarray:
    """Per-pair Bradley-Terry log-loss of sigmoid(s_a - s_b)."""
    d = (scores[te.a] - scores[te.b]).astype(np.float64)
    return np.logaddexp(0, -np.where(te.y > 0.5, d, -d))


def run(m: Method, x: np.ndarray, tr: Pairs, va: Pairs, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Item scores of one method trained on one fold, and what to record about it."""
    if m.name == "seed-bt-mlp":
        return seed_bt_mlp(x, tr, va, seed), {}
    if m.name == "ref-logreg":
        s, lam = ref_logreg(x, tr, va)
        return s, {"l2": lam}
    t = time.perf_counter()
    cfg = m.config(seed)
    info: dict[str, Any] = {}
    if m.name in ("tune", "tune-split"):
        k = 1 if m.name == "tune-split" else inner_folds_for(len(tr) + len(va))
        cfg, grid = tune_grid(x, tr, va, cfg, inner_folds=k)
        best = choose(grid)
        info = {"picked": describe(best), "family": best["method"], "settings": len(grid), "inner_folds": k,
                "grid_s": round(time.perf_counter() - t, 2)}
    model = train(x, tr, va, cfg)
    info["seconds"] = round(time.perf_counter() - t, 2)
    if model.config.l2 is not None:
        info["l2"] = model.config.l2
    return aggregate(model.score(x), "mean"), info


def versus(per: dict[str, list[np.ndarray]], mine: str, refs: list[str], seed: int) -> dict[str, Any]:
    """``mine`` minus the better reference (by mean accuracy), pair by pair."""
    best = max(refs, key=lambda r: np.concatenate(per[r]).mean())
    diff = np.concatenate(per[mine]) - np.concatenate(per[best])
    lo, hi = bootstrap_interval(diff, seed=seed)
    return {"reference": best, "diff": float(diff.mean()), "ci95": [lo, hi]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="benchmarks/.hh-store-fp32")
    ap.add_argument("--model", default=None, help="base model (default: the packaged SmolLM2-135M-Instruct)")
    ap.add_argument("--dtype", default="float32", help="extraction dtype (auto: what `embrm extract` picks)")
    ap.add_argument("--layers", default="-1", help="layers the store entry was (or is to be) extracted with")
    ap.add_argument("--layer", type=int, default=-1, help="the stored layer to train on")
    ap.add_argument("--sizes", default="300,600,1200,all")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--methods", default="bt,tune,logreg:1,seed-bt-mlp,ref-logreg",
                    help="name[:members][@lr][+std|-std], e.g. bt@1e-3+std")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1, help="repeated k-fold: each repeat a new subset and split")
    ap.add_argument("--json", default="small_data.json")
    a = ap.parse_args()
    if not HH.exists():
        raise SystemExit(f"needs {HH}")
    layers = tuple(int(v) for v in a.layers.split(","))
    r = extract(ExtractConfig(DatasetSpec(str(HH)), EmbeddingSpec(model=a.model, dtype=a.dtype, layers=layers),
                              RunOptions(store=a.store, quiet=True)))
    print(r.report(), flush=True)
    emb = open_store(a.store).load(r.model_hash, r.dataset_hash, layer=a.layer)
    v, prompt = emb.pairwise()  # (pairs, 2, D), chosen first; prompt ids by prompt text
    x = np.ascontiguousarray(v.reshape(-1, v.shape[-1]), dtype=np.float32)
    n_all = len(v)
    methods = [Method.parse(s, a.members) for s in a.methods.split(",")]
    names = [m.spec for m in methods]
    refs = [m for m in names if m in REFERENCES]
    rows, out = [], {"pairs": n_all, "model": r.model_name, "layer": a.layer, "members": a.members,
                     "lambdas": list(LAMBDAS), "sizes": {}}
    for size in a.sizes.split(","):
        n = n_all if size == "all" else int(size)
        per: dict[str, list[np.ndarray]] = {m: [] for m in names}
        loss: dict[str, list[np.ndarray]] = {m: [] for m in names}
        info: dict[str, list[dict[str, Any]]] = {m: [] for m in names}
        for rep in range(a.repeats):  # repeated k-fold: another subset and another fold split each time
            seed = a.seed + 1000 * rep
            subset = np.sort(np.random.default_rng(seed).permutation(n_all)[:n])
            fold = folds_by_prompt(prompt[subset], a.folds, seed)
            for f in range(a.folds):
                tr_idx, va_idx = split_train_val(subset[fold != f], prompt, seed + f)
                tr, va = random_order(tr_idx, prompt, seed + f), random_order(va_idx, prompt, seed + 100 + f)
                te = random_order(subset[fold == f], prompt, seed + 200 + f)
                for m in methods:
                    t = time.perf_counter()
                    s, rec = run(m, x, tr, va, seed + f)
                    per[m.spec].append(correct(s, te))
                    loss[m.spec].append(log_loss(s, te))
                    info[m.spec].append(rec)
                    print(f"  n={n} repeat {rep} fold {f} {m.spec:14s} acc {per[m.spec][-1].mean():.3f} "
                          f"log-loss {loss[m.spec][-1].mean():.4f} ({time.perf_counter() - t:.1f} s) "
                          f"{rec.get('picked', '')}", flush=True)
        res: dict[str, Any] = {
            "n": n, "folds": {m: [float(c.mean()) for c in per[m]] for m in names},
            "mean": {m: float(np.concatenate(per[m]).mean()) for m in names},
            "log_loss": {m: float(np.concatenate(loss[m]).mean()) for m in names},
            "fold_log_loss": {m: [float(c.mean()) for c in loss[m]] for m in names},
            "info": info,
        }
        row: dict[str, Any] = {"pairs": n, **res["mean"]}
        for mine in ("tune", "tune-split", "bt"):
            if mine in names and refs:
                res[f"{mine}_vs_best_ref"] = c = versus(per, mine, refs, a.seed)
                row[f"{mine} - best ref"] = f"{c['diff']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]"
        if "logreg:1" in names and "ref-logreg" in names:
            acc = np.abs(np.array(res["folds"]["logreg:1"]) - res["folds"]["ref-logreg"])
            ll = np.abs(np.array(res["fold_log_loss"]["logreg:1"]) - res["fold_log_loss"]["ref-logreg"])
            same = [i["l2"] == j["l2"] for i, j in zip(info["logreg:1"], info["ref-logreg"])]
            res["logreg_vs_ref"] = {"max_fold_acc_diff": float(acc.max()), "max_fold_log_loss_diff": float(ll.max()),
                                    "same_lambda": f"{sum(same)}/{len(same)}"}
            row["|logreg - ref| acc / log-loss"] = f"{acc.max():.4f} / {ll.max():.1e}"
        if "tune" in names:
            picks = [i["family"] for i in info["tune"]]
            row["tune grid s"] = f"{np.median([i['grid_s'] for i in info['tune']]):.1f}"
            row["tune picked"] = ", ".join(f"{k} {picks.count(k)}" for k in dict.fromkeys(picks))
        out["sizes"][str(n)] = res
        rows.append(row)
    print()
    print(machine_line())
    print(f"# HH-RLHF harmless-base test, {n_all} pairs, {a.folds}-fold prompt-disjoint CV x {a.repeats}; "
          f"{r.model_name}, layer {a.layer}; embrm ensembles of {a.members}; mean held-out pairwise accuracy")
    print(table(rows))
    print("# mean held-out log-loss: " + "; ".join(
        f"{res['n']}: " + ", ".join(f"{m} {res['log_loss'][m]:.4f}" for m in names) for res in out["sizes"].values()))
    if "tune" in names:
        secs = [i["seconds"] for res in out["sizes"].values() for i in res["info"]["tune"] if res["n"] == n_all]
        if secs:
            print(f"# tune at {n_all} pairs (grid + final ensemble): {min(secs):.1f}-{max(secs):.1f} s a fold")
    print(f"wrote {write_json(a.json, out)}")


if __name__ == "__main__":
    main()
