"""The figure of ``embrm reproduce compare``: accuracy per (model, method), in-domain and
on each held-out section, with 95% intervals."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot(path: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["in-domain (CV)"] + list(rows[0].get("held_out", {}))
    fig, ax = plt.subplots(figsize=(2.5 + 1.6 * len(cols), 3.8))
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        vals = [(r["in_domain"], r["in_domain_ci"])]
        vals += [(h["accuracy"], h["ci"]) for h in r.get("held_out", {}).values()]
        acc = np.array([v for v, _ in vals])
        err = np.array([[v - ci[0], ci[1] - v] for v, ci in vals]).T
        ax.bar(np.arange(len(cols)) + i * width, acc, width, yerr=err, capsize=2, label=f"{r['model']} {r['method']}")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(cols)) + width * (len(rows) - 1) / 2, cols, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("pairwise accuracy")
    ax.legend(fontsize=6, ncol=2)
    ax.set_title("methods x base models (95% bootstrap intervals)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
