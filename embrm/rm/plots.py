"""PNG plots of a run (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def pyplot() -> Any:
    """matplotlib's pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bon_curves(metrics: dict[str, Any], out: Path, title: str = "") -> Path:
    """Best-of-N golden reward against N, one line per aggregation.

    Bands are 95% intervals of the gain over a random pick across prompts: prompts differ
    in how much reward any response gets, and that spread says nothing about the model.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ns = np.array(metrics["N"])
    for how, v in metrics["aggregations"].items():
        m, se = np.array(v["bon"]), np.array(v.get("bon_gain_se", v["bon_se"]))
        ax.plot(ns, m, marker="o", ms=3, label=how)
        ax.fill_between(ns, m - 1.96 * se, m + 1.96 * se, alpha=0.15)
    ax.plot(ns, metrics["oracle"], ls="--", c="grey", label="oracle (gold picks)")
    ax.axhline(metrics["random"], ls=":", c="k", label="random pick")
    ax.set_xscale("log")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.minorticks_off()
    ax.set_xlabel("N (responses sampled)")
    ax.set_ylabel("golden reward of best-of-N pick")
    ax.set_title((title or "Best-of-N") + "\n(bands: 95% CI of the gain over a random pick)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def calibration(conf: np.ndarray, acc: np.ndarray, cnt: np.ndarray, ece: float, out: Path, title: str = "") -> Path:
    """Reliability diagram of pairwise probabilities."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=120)
    ok = cnt > 0
    ax.plot([0, 1], [0, 1], ls="--", c="grey")
    ax.plot(conf[ok], acc[ok], marker="o")
    ax.set_xlabel("predicted P(a preferred), each pair in both orders")
    ax.set_ylabel("observed frequency")
    ax.set_title(f"{title} ECE={ece:.3f}".strip())
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
