"""PNG plots of a run (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bon_curves(metrics: dict[str, Any], out: Path, title: str = "") -> Path:
    """Best-of-N golden reward against N, one line per aggregation, 95% bands across prompts."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ns = np.array(metrics["N"])
    for how, v in metrics["aggregations"].items():
        m, se = np.array(v["bon"]), np.array(v["bon_se"])
        ax.plot(ns, m, marker="o", ms=3, label=how)
        ax.fill_between(ns, m - 1.96 * se, m + 1.96 * se, alpha=0.15)
    ax.plot(ns, metrics["oracle"], ls="--", c="grey", label="oracle (gold picks)")
    ax.axhline(metrics["random"], ls=":", c="k", label="random pick")
    ax.set_xscale("log")
    ax.set_xlabel("N (responses sampled)")
    ax.set_ylabel("golden reward of best-of-N pick")
    ax.set_title(title or "Best-of-N")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def calibration(conf: np.ndarray, acc: np.ndarray, cnt: np.ndarray, ece: float, out: Path, title: str = "") -> Path:
    """Reliability diagram of pairwise probabilities."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=120)
    ok = cnt > 0
    ax.plot([0, 1], [0, 1], ls="--", c="grey")
    ax.plot(conf[ok], acc[ok], marker="o")
    ax.set_xlabel("predicted P(a preferred)")
    ax.set_ylabel("observed frequency")
    ax.set_title(f"{title} ECE={ece:.3f}".strip())
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
