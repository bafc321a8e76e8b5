"""``embrm reproduce layers``: which stored layer makes the best reward model.

Reward-probe studies often find that a middle layer's hidden state ranks responses
better than the last one's. ``embrm extract --layers 0,4,...,-1`` stores several layers in
one forward pass; this study trains the chosen methods on each stored layer (and, if
asked, on the concatenation or the mean of them all) under one k-fold cross-validation
whose folds are disjoint in prompts, so every prompt is held out exactly once and every
layer is scored on the same held-out units.

Held-out units are pairs (pairwise data: accuracy) or prompts (multi-response data with
golden rewards: best-of-N golden reward, and the prompt's pairwise accuracy). Intervals
are percentile bootstraps of the mean over the pooled units; each layer is also compared
with the last layer unit by unit (a paired bootstrap), which removes the spread both
share. Each fold trains exactly as ``embrm train`` does (:func:`embrm.rm.trainer.train`
on :func:`embrm.rm.experiment.make_training_pairs`), with 20% of the training prompts
for validation.

Writes ``layers.json`` (everything, per fold), ``layers.csv``, ``layers.md`` and
``layers.png``.
"""
from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from embrm.errors import EmbrmError
from embrm.rm.experiment import DataConfig, Dataset, from_embeddings, make_training_pairs
from embrm.rm.metrics import aggregate, best_of_n, bootstrap_interval, pairwise_accuracy
from embrm.rm.pairs import split_prompts
from embrm.rm.run import write_json
from embrm.rm.trainer import TrainConfig, train

COMBINE = ("concat", "mean")


@dataclass
class LayersConfig:
    methods: tuple[str, ...] = ("logreg", "bt")
    folds: int = 5
    members: int = 1
    hidden: tuple[int, ...] = (1024, 512)
    combine: tuple[str, ...] = ()  # "concat" and/or "mean" of every stored layer
    prompts: int | None = None  # a seeded subset of this many prompts (None: all)
    val_frac: float = 0.2
    pairs_per_prompt: int = 5  # multi-response data: simulated pairs per prompt
    annotation_quality: float = -1.0
    bon_n: int | None = None  # multi-response data: N of the best-of-N metric (default: K)
    standardize: bool | None = None  # None: each method's default
    seed: int = 0


def cv_splits(n_prompts: int, folds: int, val_frac: float, seed: int, prompts: int | None = None
              ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(train, validation, test) prompt ids of each fold: the (subset of) prompts dealt
    into ``folds`` test folds at random; each fold's other prompts split into training
    and validation as :func:`~embrm.rm.pairs.split_prompts` splits them for ``train``."""
    if folds < 2:
        raise EmbrmError("--folds must be at least 2")
    pool = np.random.default_rng(seed).permutation(n_prompts)[: prompts or n_prompts]
    if len(pool) < 2 * folds:
        raise EmbrmError(f"{len(pool)} prompts are too few for {folds} folds")
    fold = np.arange(len(pool)) % folds
    out = []
    for f in range(folds):
        rest = pool[fold != f]
        tr, va = split_prompts(len(rest), val_frac, seed + f)
        out.append((np.sort(rest[tr]), np.sort(rest[va]), np.sort(pool[fold == f])))
    return out


def held_out(scores: np.ndarray, ds: Dataset, prompts: np.ndarray, bon_n: int | None = None
             ) -> dict[str, np.ndarray]:
    """Per-unit results of item scores ``(items,)`` on the test prompts.

    Pairwise data: ``accuracy`` per pair (1, 0, or 1/2 for a tie). Multi-response data:
    ``bon`` (golden reward of the best-of-N pick) and ``accuracy`` (over the prompt's
    pairs of distinct golden reward) per prompt.
    """
    if ds.gold is None:
        assert ds.pairs is not None
        p = ds.pairs.subset(ds.pairs.among(prompts, held_out=True))
        d = scores[p.a] - scores[p.b]
        return {"accuracy": np.where(d == 0, 0.5, (d > 0) == (p.y > 0.5)).astype(float)}
    k = ds.gold.shape[1]
    s, g = scores.reshape(-1, k)[prompts], ds.gold[prompts]
    i, j = np.triu_indices(k, 1)
    acc = np.full(len(prompts), np.nan)  # NaN: every golden reward of the prompt ties
    for n, (sp, gp) in enumerate(zip(s, g)):
        keep = gp[i] != gp[j]
        if keep.any():
            acc[n] = pairwise_accuracy(sp[i][keep], sp[j][keep], (gp[i] > gp[j])[keep].astype(float))
    return {"bon": best_of_n(s, g, [bon_n or k])[:, 0], "accuracy": acc}


def feature_sets(store: Any, model_key: str, dataset_key: str, combine: tuple[str, ...] = ()
                 ) -> list[tuple[str, int | None, Dataset]]:
    """(label, layer, data) for every stored layer, then the asked combinations of them all."""
    e = store.resolve(model_key, dataset_key)
    if not e.layers:
        raise EmbrmError(f"{e.model_name} x {e.dataset_name} has no stored vectors yet; run `embrm extract`")
    bad = [c for c in combine if c not in COMBINE]
    if bad:
        raise EmbrmError(f"unknown combination {bad[0]!r}; use {' or '.join(COMBINE)}")
    sets = [(f"layer {layer}", layer, from_embeddings(store.load(e.model_hash, e.dataset_hash, layer=layer)))
            for layer in ordered_layers(e.layers)]
    if combine and len(sets) < 2:
        raise EmbrmError("combining layers needs an entry extracted with several (embrm extract --layers ...)")
    stack = [ds.x for _, _, ds in sets] if combine else []
    for how in combine:
        x = np.concatenate(stack, 1) if how == "concat" else np.mean(stack, 0, dtype=np.float32)
        sets.append((f"{how} of layers", None, replace(sets[0][2], x=np.ascontiguousarray(x, np.float32))))
    return sets


def ordered_layers(layers: tuple[int, ...] | list[int]) -> list[int]:
    """Depth order: counted from the input (0, 4, ...) first, then from the output (..., -2, -1)."""
    return sorted(x for x in layers if x >= 0) + sorted(x for x in layers if x < 0)


def last_layer(layers: tuple[int, ...] | list[int]) -> int:
    return -1 if -1 in layers else ordered_layers(layers)[-1]


def reproduce_layers(store: Any, model_key: str, dataset_key: str, out: Path, lc: LayersConfig,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Cross-validate every (feature set, method); write the four output files."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    e = store.resolve(model_key, dataset_key)
    sets = feature_sets(store, e.model_hash, e.dataset_hash, lc.combine)
    first = sets[0][2]
    metric = "accuracy" if first.gold is None else "bon"
    splits = cv_splits(first.n_prompts, lc.folds, lc.val_frac, lc.seed, lc.prompts)
    dc = DataConfig(pairs_per_prompt=lc.pairs_per_prompt, annotation_quality=lc.annotation_quality,
                    val_frac=lc.val_frac, seed=lc.seed)
    units: dict[tuple[str, str], dict[str, list[np.ndarray]]] = {}
    rows: list[dict[str, Any]] = []
    for label, layer, ds in sets:
        for method in lc.methods:
            per: dict[str, list[np.ndarray]] = {}
            for f, (tr, va, te) in enumerate(splits):
                cfg = TrainConfig(method=method, ensemble=lc.members, hidden=lc.hidden, seed=lc.seed + f,
                                  standardize=lc.standardize)
                model = train(ds.x, make_training_pairs(ds, dc, tr),
                              make_training_pairs(ds, dc, va, 1000, held_out=True), cfg)
                for name, v in held_out(aggregate(model.score(ds.x), "mean"), ds, te, lc.bon_n).items():
                    per.setdefault(name, []).append(v)
            units[(label, method)] = per
            pooled = np.concatenate(per[metric])
            lo, hi = bootstrap_interval(pooled, seed=lc.seed)
            rows.append({"features": label, "layer": layer, "method": method, "metric": metric,
                         "mean": float(np.nanmean(pooled)), "ci_low": lo, "ci_high": hi, "units": int(len(pooled)),
                         "fold_means": [float(np.nanmean(v)) for v in per[metric]]})
            log(f"  {label:>18} {method:>10}: {metric} {rows[-1]['mean']:.4f} [{lo:.4f}, {hi:.4f}]")
    last = f"layer {last_layer([x for _, x, _ in sets if x is not None])}"
    for r in rows:  # unit by unit against the last layer, same method
        d = np.concatenate(units[(r["features"], r["method"])][metric]) - np.concatenate(
            units[(last, r["method"])][metric])
        r["vs_last"] = float(np.nanmean(d))
        r["vs_last_ci_low"], r["vs_last_ci_high"] = bootstrap_interval(d, seed=lc.seed)
    best = {m: max((r for r in rows if r["method"] == m and r["layer"] is not None), key=lambda r: r["mean"])
            for m in lc.methods}
    result = {"model": e.model_name, "dataset": e.dataset_name, "dim": int(first.x.shape[1]), "folds": lc.folds,
              "prompts": sum(len(s[2]) for s in splits),
              "metric": metric, "last": last, "config": {k: list(v) if isinstance(v, tuple) else v
                                                         for k, v in vars(lc).items()},
              "rows": rows, "best": {m: r["features"] for m, r in best.items()},
              "summary": [best_line(r, last) for r in best.values()]}
    write_json(out / "layers.json", result)
    keys = [k for k in rows[0] if k != "fold_means"]
    with open(out / "layers.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (out / "layers.md").write_text(markdown(result) + "\n")
    figure(result, out / "layers.png")
    return result


def best_line(r: dict[str, Any], last: str) -> str:
    """``logreg: layer 16 beats layer -1 by +0.021 [+0.004, +0.038]`` (or: does not clearly)."""
    if r["features"] == last:
        return f"{r['method']}: the last layer ({last}) is the best stored layer"
    clear = r["vs_last_ci_low"] > 0
    return (f"{r['method']}: best {r['features']}, {r['vs_last']:+.4f} {r['metric']} against {last} "
            f"[{r['vs_last_ci_low']:+.4f}, {r['vs_last_ci_high']:+.4f}]"
            + ("" if clear else " (the interval includes 0: not a clear win)"))


def markdown(result: dict[str, Any]) -> str:
    m = result["metric"]
    lines = [f"| features | method | {m} | 95% CI | vs {result['last']} (paired 95% CI) |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['features']} | {r['method']} | {r['mean']:.4f} | [{r['ci_low']:.4f}, {r['ci_high']:.4f}] "
                     f"| {r['vs_last']:+.4f} [{r['vs_last_ci_low']:+.4f}, {r['vs_last_ci_high']:+.4f}] |")
    return "\n".join(lines + [""] + [f"* {s}" for s in result["summary"]])


def figure(result: dict[str, Any], path: Path) -> None:
    """The metric against layer (in depth order), one line per method, with 95% intervals;
    combinations of layers as separate points on the right."""
    from embrm.rm.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.2), dpi=120)
    labels = list(dict.fromkeys(r["features"] for r in result["rows"]))
    pos = {lab: i for i, lab in enumerate(labels)}
    for c, method in enumerate(dict.fromkeys(r["method"] for r in result["rows"])):
        rs = [r for r in result["rows"] if r["method"] == method]
        for group in ([r for r in rs if r["layer"] is not None], [r for r in rs if r["layer"] is None]):
            if not group:
                continue
            x = [pos[r["features"]] + 0.08 * c for r in group]
            y = np.array([r["mean"] for r in group])
            err = np.array([[r["mean"] - r["ci_low"] for r in group], [r["ci_high"] - r["mean"] for r in group]])
            ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=3, color=f"C{c}",
                        ls="-" if group[0]["layer"] is not None else "none",
                        label=method if group[0]["layer"] is not None else None)
    ax.set_xticks(range(len(labels)), [lab.replace("layer ", "").replace(" of layers", "") for lab in labels])
    ax.set_xlabel("stored layer (0 = token embeddings, -1 = last)")
    ax.set_ylabel("held-out pairwise accuracy" if result["metric"] == "accuracy" else "best-of-N golden reward")
    ax.set_title(f"{result['folds']}-fold prompt-disjoint CV, {result['prompts']} prompts (bars: 95% bootstrap CI)",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


__all__ = ["LayersConfig", "cv_splits", "feature_sets", "held_out", "markdown", "reproduce_layers"]
