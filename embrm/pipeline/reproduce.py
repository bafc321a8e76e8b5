"""``embrm reproduce ensemble``: the seed paper's ensemble case study on any store entry.

For each method (BT, CLF) and each annotation quality, train one ensemble and compare
mean, min (worst-case) and single-member aggregation on held-out prompts: Best-of-N
golden reward, Spearman and pairwise accuracy. Writes one figure and one table.
"""
from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embrm.rm.experiment import DataConfig, train_from_store
from embrm.rm.run import write_json
from embrm.rm.trainer import TrainConfig

AGGS = ("mean", "min", "single")


@dataclass
class ReproduceConfig:
    methods: tuple[str, ...] = ("bt", "clf")
    qualities: tuple[float, ...] = (-1.0, 10.0, 1.0, 0.3)
    members: int = 5
    hidden: tuple[int, ...] = (1024, 512)
    pairs_per_prompt: int = 10
    epochs: int = 30
    val_frac: float = 0.2
    seed: int = 0


def _quality(b: float) -> str:
    return "perfect" if b < 0 else f"beta={b:g}"


def reproduce_ensemble(store: Any, model_key: str, dataset_key: str, out: Path, rc: ReproduceConfig,
                       ns: list[int] | None = None, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train every (method, quality) ensemble, write ``ensemble.png``/``.csv``/``.md``/``.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    curves: dict[tuple[str, float], dict[str, Any]] = {}
    for method in rc.methods:
        for beta in rc.qualities:
            tc = TrainConfig(method=method, ensemble=rc.members, hidden=rc.hidden, max_epochs=rc.epochs, seed=rc.seed)
            dc = DataConfig(annotation_quality=beta, pairs_per_prompt=rc.pairs_per_prompt, val_frac=rc.val_frac,
                            seed=rc.seed)
            run_dir = out / "runs" / f"{method}-{_quality(beta).replace('=', '')}"
            model, m = train_from_store(store, model_key, dataset_key, tc, dc, run_dir, ns=ns)
            curves[(method, beta)] = m
            for agg in AGGS:
                a = m["aggregations"][agg]
                rows.append({"method": method, "quality": _quality(beta), "aggregation": agg,
                             **{f"bon@{n}": round(v, 4) for n, v in zip(m["N"], a["bon"])},
                             "spearman": round(a["spearman"], 4), "pair_acc": round(a["pairwise_accuracy"], 4),
                             "train_s": round(model.log.seconds, 2)})
            log(f"  {method} {_quality(beta)}: BoN@{m['N'][-1]} mean {m['aggregations']['mean']['bon'][-1]:.3f} "
                f"min {m['aggregations']['min']['bon'][-1]:.3f} single {m['aggregations']['single']['bon'][-1]:.3f} "
                f"({model.log.seconds:.1f} s)")
    first = next(iter(curves.values()))  # every run shares the seed's prompt split
    rows.append({"method": "-", "quality": "-", "aggregation": "oracle (gold picks)",
                 **{f"bon@{n}": round(v, 4) for n, v in zip(first["N"], first["oracle"])},
                 "spearman": 1.0, "pair_acc": 1.0, "train_s": 0.0})
    write_json(out / "ensemble.json", rows)
    with open(out / "ensemble.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "ensemble.md").write_text(markdown(rows) + "\n")
    _figure(curves, rc, out / "ensemble.png")
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    keys = [k for k in rows[0] if k != "train_s"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |")
    return "\n".join(lines)


def _figure(curves: dict[tuple[str, float], dict[str, Any]], rc: ReproduceConfig, path: Path) -> None:
    """One panel per method: BoN curves of mean/min/single, one line style per quality."""
    from embrm.rm.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, len(rc.methods), figsize=(5.5 * len(rc.methods), 4.2), dpi=120, squeeze=False)
    colors = {"mean": "C0", "min": "C3", "single": "C2"}
    styles = ["-", "--", "-.", ":", (0, (1, 3))]
    for ax, method in zip(axes[0], rc.methods):
        for q, beta in enumerate(rc.qualities):
            m = curves[(method, beta)]
            for agg in AGGS:
                ax.plot(m["N"], m["aggregations"][agg]["bon"], color=colors[agg], ls=styles[q % len(styles)],
                        marker="o", ms=2.5, label=f"{agg}, {_quality(beta)}")
        ref = curves[(method, rc.qualities[0])]  # every run shares the seed's held-out prompts
        ax.plot(ref["N"], ref["oracle"], ls="--", c="grey", label="oracle (gold picks)")
        ax.axhline(ref["random"], ls=":", c="k", label="random pick")
        ax.set_xscale("log")
        ns = ref["N"]
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.set_title(f"{method.upper()} ensemble of {rc.members}")
        ax.set_xlabel("N")
        ax.set_ylabel("golden reward of best-of-N (held-out prompts)")
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


__all__ = ["ReproduceConfig", "markdown", "reproduce_ensemble"]
