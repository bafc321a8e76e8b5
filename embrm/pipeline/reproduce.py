"""``embrm reproduce ensemble``: the seed paper's ensemble case study on any store entry.

For each method (BT, CLF) and each annotation quality, train one ensemble per seed and
compare mean, min (worst-case), single-member and mean-minus-variance aggregation on
held-out prompts: Best-of-N golden reward, Spearman and pairwise accuracy. Each seed
draws its own prompt split, pairs, annotator noise and initialisation, so with several
seeds every number is a mean with a 95% interval over them. Writes one figure and one
table.
"""
from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embrm.rm.experiment import DataConfig, train_from_store
from embrm.rm.metrics import mean_interval as interval
from embrm.rm.run import write_json
from embrm.rm.trainer import TrainConfig

AGGS = ("mean", "min", "single", "mean-var")


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
    seeds: int = 1  # seeds seed, seed + 1, ...: one ensemble each, intervals over them
    aggregations: tuple[str, ...] = AGGS


def _quality(b: float) -> str:
    return "perfect" if b < 0 else f"beta={b:g}"


def reproduce_ensemble(store: Any, model_key: str, dataset_key: str, out: Path, rc: ReproduceConfig,
                       ns: list[int] | None = None, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train every (method, quality, seed) ensemble, write ``ensemble.png``/``.csv``/``.md``/``.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for method in rc.methods:
        for beta in rc.qualities:
            for seed in range(rc.seed, rc.seed + rc.seeds):
                tc = TrainConfig(method=method, ensemble=rc.members, hidden=rc.hidden, max_epochs=rc.epochs, seed=seed)
                dc = DataConfig(annotation_quality=beta, pairs_per_prompt=rc.pairs_per_prompt, val_frac=rc.val_frac,
                                seed=seed)
                name = f"{method}-{_quality(beta).replace('=', '')}" + (f"-s{seed}" if rc.seeds > 1 else "")
                model, m = train_from_store(store, model_key, dataset_key, tc, dc, out / "runs" / name, ns=ns)
                m["train_s"] = model.log.seconds
                runs.setdefault((method, beta), []).append(m)
                a = m["aggregations"]
                log(f"  {method} {_quality(beta)} seed {seed}: BoN@{m['N'][-1]} "
                    + " ".join(f"{agg} {a[agg]['bon'][-1]:.3f}" for agg in rc.aggregations)
                    + f" ({model.log.seconds:.1f} s)")
    rows = _rows(runs, rc)
    write_json(out / "ensemble.json", rows)
    with open(out / "ensemble.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "ensemble.md").write_text(markdown(rows) + "\n")
    _figure(runs, rc, out / "ensemble.png")
    return rows


def _rows(runs: dict[tuple[str, float], list[dict[str, Any]]], rc: ReproduceConfig) -> list[dict[str, Any]]:
    """One row per (method, quality, aggregation): means over seeds, and 95% half-widths
    (``_ci`` columns) when there are several seeds."""
    rows: list[dict[str, Any]] = []

    def add(row: dict[str, Any], name: str, values: list[float]) -> None:
        mean, ci = interval(np.array(values))
        row[name] = round(mean, 4)
        if rc.seeds > 1:
            row[f"{name}_ci"] = round(ci, 4)

    for (method, beta), ms in runs.items():
        for agg in rc.aggregations:
            row: dict[str, Any] = {"method": method, "quality": _quality(beta), "aggregation": agg}
            for i, n in enumerate(ms[0]["N"]):
                add(row, f"bon@{n}", [m["aggregations"][agg]["bon"][i] for m in ms])
            add(row, "spearman", [m["aggregations"][agg]["spearman"] for m in ms])
            add(row, "pair_acc", [m["aggregations"][agg]["pairwise_accuracy"] for m in ms])
            row["train_s"] = round(float(np.mean([m["train_s"] for m in ms])), 2)
            rows.append(row)
    first = next(iter(runs.values()))  # every (method, quality) shares each seed's prompt split
    oracle: dict[str, Any] = {"method": "-", "quality": "-", "aggregation": "oracle (gold picks)"}
    for i, n in enumerate(first[0]["N"]):
        add(oracle, f"bon@{n}", [m["oracle"][i] for m in first])
    rows.append({**{k: (1.0 if k.startswith(("spearman", "pair_acc")) and not k.endswith("_ci") else 0.0)
                    for k in rows[0]}, **oracle})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """A Markdown table; a column with a ``_ci`` twin shows ``mean +- half-width``."""
    keys = [k for k in rows[0] if k != "train_s" and not k.endswith("_ci")]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]

    def cell(r: dict[str, Any], k: str) -> str:
        if not isinstance(r[k], float):
            return str(r[k])
        return f"{r[k]:.3f}" + (f" +- {r[k + '_ci']:.3f}" if r.get(k + "_ci") else "")

    for r in rows:
        lines.append("| " + " | ".join(cell(r, k) for k in keys) + " |")
    return "\n".join(lines)


def _figure(runs: dict[tuple[str, float], list[dict[str, Any]]], rc: ReproduceConfig, path: Path) -> None:
    """A panel per (method, quality): Best-of-N curves of each aggregation, bands of 95%
    intervals over seeds."""
    from embrm.rm.plots import pyplot

    plt = pyplot()
    nm, nq = len(rc.methods), len(rc.qualities)
    fig, axes = plt.subplots(nm, nq, figsize=(3.6 * nq, 3.2 * nm), dpi=120, squeeze=False, sharey=True)
    colors = {"mean": "C0", "min": "C3", "single": "C2", "mean-var": "C1", "mean-std": "C4"}
    for r, method in enumerate(rc.methods):
        for c, beta in enumerate(rc.qualities):
            ax, ms = axes[r][c], runs[(method, beta)]
            ns = ms[0]["N"]
            for agg in rc.aggregations:
                st = [interval(np.array([m["aggregations"][agg]["bon"][i] for m in ms])) for i in range(len(ns))]
                mean, ci = np.array([x[0] for x in st]), np.array([x[1] for x in st])
                ax.plot(ns, mean, color=colors.get(agg), marker="o", ms=2.5, label=agg)
                ax.fill_between(ns, mean - ci, mean + ci, color=colors.get(agg), alpha=0.15)
            ax.plot(ns, np.mean([m["oracle"] for m in ms], 0), ls="--", c="grey", label="oracle")
            ax.axhline(np.mean([m["random"] for m in ms]), ls=":", c="k", label="random pick")
            ax.set_xscale("log")
            ax.set_xticks(ns, [str(n) for n in ns])
            ax.minorticks_off()
            ax.set_title(f"{method.upper()} x{rc.members}, {_quality(beta)}", fontsize=9)
            if r == nm - 1:
                ax.set_xlabel("N")
            if c == 0:
                ax.set_ylabel("golden reward of best-of-N")
    axes[0][0].legend(fontsize=6)
    fig.suptitle(f"held-out prompts; bands: 95% intervals over {rc.seeds} seed(s)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


__all__ = ["AGGS", "ReproduceConfig", "markdown", "reproduce_ensemble"]
