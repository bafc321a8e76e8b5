"""Real human preferences: embedding reward models on HH-RLHF harmless-base test pairs.

1. Extract SmolLM2-135M-Instruct embeddings of every chosen and rejected response of the
   2,312 pairs in ``../shared/data/hh-rlhf/`` (cached in the store after the first run).
2. Split pairs 80/20 by prompt text (no prompt on both sides); 10% of the training prompts
   are held out again for early stopping.
3. Train BT-MLP, CLF-MLP and linear BT ensembles on the 80%.
4. Report held-out pairwise accuracy with a 95% bootstrap interval, next to two
   length-only baselines: "the longer response wins", and a logistic model on token counts.

Whether the embeddings beat length is a finding, not a target. Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from embrm import methods
from embrm.extractor import DatasetSpec, EmbeddingSpec, ExtractConfig, RunOptions, extract
from embrm.rm import TrainConfig, train
from embrm.rm.metrics import aggregate
from embrm.rm.pairs import Pairs
from embrm.store import open_store

from _common import machine_line, table, write_json

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def bootstrap_ci(correct: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = correct[rng.integers(0, len(correct), (reps, len(correct)))].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="benchmarks/.hh-store")
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--pooling", default="last")
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="hh.json")
    a = ap.parse_args()
    if not HH.exists():
        raise SystemExit(f"needs {HH}")
    r = extract(ExtractConfig(DatasetSpec(str(HH), limit=a.limit),
                              EmbeddingSpec(pooling=a.pooling, max_length=a.max_length), RunOptions(store=a.store)))
    print(r.report(), flush=True)
    store = open_store(a.store)
    emb = store.load(r.model_hash, r.dataset_hash)
    rows = store.rows.read(r.dataset_hash, ["prompt", "response", "role"]).to_pylist()
    n = len(rows) // 2
    x = np.asarray(emb.vectors, np.float32)  # items in file order: chosen, rejected, chosen, ...
    chosen, rejected = np.arange(n) * 2, np.arange(n) * 2 + 1
    assert all(rows[i]["role"] == "chosen" for i in chosen)
    prompts = [rows[i]["prompt"] for i in chosen]
    _, group = np.unique(prompts, return_inverse=True)
    rng = np.random.default_rng(a.seed)
    perm = rng.permutation(group.max() + 1)
    test_groups = set(perm[: int(0.2 * len(perm))].tolist())
    val_groups = set(perm[int(0.2 * len(perm)): int(0.28 * len(perm))].tolist())
    is_test = np.array([g in test_groups for g in group])
    is_val = np.array([g in val_groups for g in group])
    is_train = ~is_test & ~is_val
    # show each pair in random order so no model can learn "first is chosen"
    swap = rng.random(n) < 0.5
    pa_, pb_ = np.where(swap, rejected, chosen), np.where(swap, chosen, rejected)
    y = np.where(swap, 0.0, 1.0).astype(np.float32)

    def pairs(mask: np.ndarray) -> Pairs:
        return Pairs(pa_[mask], pb_[mask], y[mask], group[mask])

    tr, va, te = pairs(is_train), pairs(is_val), pairs(is_test)
    results: dict[str, dict] = {}

    def report(name: str, correct: np.ndarray, seconds: float = 0.0) -> None:
        lo, hi = bootstrap_ci(correct.astype(float))
        results[name] = {"accuracy": float(correct.mean()), "ci95": [lo, hi], "train_s": seconds}
        print(f"  {name:32s} {correct.mean():.3f}  [{lo:.3f}, {hi:.3f}]", flush=True)

    te_y = te.y > 0.5
    tok = emb.n_tokens.astype(float)  # prompt is shared, so differences are response lengths
    longer = np.sign(tok[te.a] - tok[te.b])
    report("length: longer wins", np.where(longer == 0, 0.5, (longer > 0) == te_y))
    from scipy.optimize import minimize

    def feats(p: Pairs) -> np.ndarray:
        return np.stack([tok[p.a] - tok[p.b], np.log(tok[p.a]) - np.log(tok[p.b])], 1)

    ftr = feats(tr)
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-9
    def nll(w: np.ndarray) -> float:
        z = ((ftr - mu) / sd) @ w
        return float(np.mean(np.logaddexp(0, -z * (2 * tr.y - 1))))
    w = minimize(nll, np.zeros(2)).x
    z = ((feats(te) - mu) / sd) @ w
    report("length: logistic on token counts", np.where(z == 0, 0.5, (z > 0) == te_y))
    for method in [n for n in methods.builtin_names() if methods.get(n).tune_kind == "adam"]:
        t = time.perf_counter()
        m = train(x, tr, va, TrainConfig(method=method, ensemble=a.members, seed=a.seed))  # the defaults
        s = aggregate(m.score(x), "mean")
        d = s[te.a] - s[te.b]
        report(f"{method} x{a.members} (embeddings)", np.where(d == 0, 0.5, (d > 0) == te_y), time.perf_counter() - t)
    print(machine_line())
    print(f"# HH-RLHF harmless-base test: {n} pairs, {int(is_train.sum())} train / {int(is_val.sum())} val / "
          f"{int(is_test.sum())} test pairs (prompt-disjoint); SmolLM2-135M-Instruct {r.model_name}")
    print(table([{"model": k, "accuracy": v["accuracy"],
                  "95% bootstrap CI": f"[{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]"} for k, v in results.items()]))
    out = {"pairs": n, "train": int(is_train.sum()), "val": int(is_val.sum()), "test": int(is_test.sum()),
           "model": r.model_name, "pooling": a.pooling, "results": results,
           "extract": {"computed": r.computed, "cached": r.cached, "truncated": r.truncated,
                       "tok_s": r.tokens / r.compute_seconds if r.compute_seconds else None}}
    print(f"wrote {write_json(a.json, out)}")


if __name__ == "__main__":
    main()
