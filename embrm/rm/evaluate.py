"""Evaluate a trained ensemble on numpy arrays: every aggregation, every metric.

Works without a store, so a notebook can call it on its own arrays.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from embrm.errors import EmbrmError
from embrm.rm.metrics import (
    AGGREGATIONS,
    DEFAULT_BON,
    aggregate,
    best_of_n,
    bon_quantile,
    check_bon,
    expected_calibration_error,
    kendall_per_prompt,
    nanmean,
    pairwise_accuracy,
    spearman_per_prompt,
)
from embrm.rm.pairs import make_pairs


def evaluate_multi(scores: np.ndarray, gold: np.ndarray, ns: list[int] | None = None,
                   aggregations: tuple[str, ...] = AGGREGATIONS, coef: float = 1.0, seed: int = 0,
                   pairs_per_prompt: int = 10) -> dict[str, Any]:
    """Metrics for member scores ``(M, P, K)`` against golden rewards ``(P, K)``.

    Per aggregation: expected best-of-N golden reward (mean over prompts and its standard
    error), the BoN pick's quantile, per-prompt Spearman and Kendall (NaN-skipping mean),
    pairwise accuracy against golden preferences on random within-prompt pairs, and the
    calibration error of the pairwise probabilities.
    """
    if scores.ndim != 3:
        raise EmbrmError(f"scores must be (members, prompts, K), got shape {scores.shape}")
    p, k = gold.shape
    if ns is None:  # the seed paper's N values up to K, and K itself
        ns = [n for n in DEFAULT_BON if n < k] + [k]
    check_bon(scores[0], gold, ns)
    a, b, _ = make_pairs(gold, np.arange(p), pairs_per_prompt, "within", "random", seed)
    ga, gb = gold.reshape(-1)[a], gold.reshape(-1)[b]
    keep = ga != gb  # golden ties have no right answer
    out: dict[str, Any] = {"N": ns, "prompts": p, "K": k, "members": int(scores.shape[0]),
                           "oracle": best_of_n(gold, gold, ns).mean(0).tolist(),
                           "random": float(gold.mean()), "aggregations": {}}
    for how in aggregations:
        s = aggregate(scores, how, coef)
        bon = best_of_n(s, gold, ns)
        flat = s.reshape(-1)
        y = (ga > gb).astype(float)
        ece, *_ = expected_calibration_error(flat[a][keep], flat[b][keep], y[keep])
        out["aggregations"][how] = {
            "bon": bon.mean(0).tolist(),
            "bon_se": (bon.std(0, ddof=1) / np.sqrt(p)).tolist() if p > 1 else [0.0] * len(ns),
            # the gain over a random pick, per prompt: its spread is the method's, not the prompts'
            "bon_gain_se": ((bon - gold.mean(1, keepdims=True)).std(0, ddof=1) / np.sqrt(p)).tolist()
            if p > 1 else [0.0] * len(ns),
            "bon_quantile": bon_quantile(s, gold, ns).mean(0).tolist(),
            "spearman": nanmean(spearman_per_prompt(s, gold)),
            "kendall": nanmean(kendall_per_prompt(s, gold)),
            "pairwise_accuracy": pairwise_accuracy(flat[a][keep], flat[b][keep], y[keep]),
            "ece": ece,
        }
    return out


def evaluate_pairs(scores: np.ndarray, a: np.ndarray, b: np.ndarray, y: np.ndarray,
                   aggregations: tuple[str, ...] = AGGREGATIONS, coef: float = 1.0) -> dict[str, Any]:
    """Pairwise accuracy and calibration for member scores ``(M, items)`` on given pairs."""
    out: dict[str, Any] = {"pairs": int(len(a)), "members": int(scores.shape[0]), "aggregations": {}}
    for how in aggregations:
        s = aggregate(scores, how, coef)
        ece, *_ = expected_calibration_error(s[a], s[b], y)
        out["aggregations"][how] = {"pairwise_accuracy": pairwise_accuracy(s[a], s[b], y), "ece": ece}
    return out


def table(metrics: dict[str, Any], ns_shown: int = 6) -> str:
    """A plain-text results table, one row per aggregation."""
    aggs = metrics["aggregations"]
    if "N" in metrics:
        ns = metrics["N"]
        pick = sorted(set(np.linspace(0, len(ns) - 1, min(ns_shown, len(ns))).round().astype(int)))
        head = ["aggregation"] + [f"BoN@{ns[i]}" for i in pick] + ["spearman", "kendall", "pair-acc", "ECE"]
        rows = [[h] + [f"{v['bon'][i]:.3f}" for i in pick]
                + [f"{v['spearman']:.3f}", f"{v['kendall']:.3f}", f"{v['pairwise_accuracy']:.3f}", f"{v['ece']:.3f}"]
                for h, v in aggs.items()]
        rows.append(["(oracle)"] + [f"{metrics['oracle'][i]:.3f}" for i in pick] + ["", "", "", ""])
    else:
        head = ["aggregation", "pair-acc", "ECE"]
        rows = [[h, f"{v['pairwise_accuracy']:.3f}", f"{v['ece']:.3f}"] for h, v in aggs.items()]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda r: "  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(head), *(fmt(r) for r in rows)]).rstrip()
