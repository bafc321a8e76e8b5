"""``embrm train --tune``: the model family and its settings, chosen by inner cross-validation.

Families and their grids (:class:`Grid`):

* ``logreg`` and ``logreg-clf``: the exact L2 logistic regression (on pairs; on each
  response alone), every lambda of its path;
* ``linear``: linear Bradley-Terry by AdamW, learning rate x weight decay;
* ``bt`` and ``clf``: MLPs of widths 64 and 256, learning rate x weight decay, and the
  seed paper's D -> 1024 -> 512 -> 1 BT-MLP on a smaller grid (see :class:`Grid`).

Gradient-trained settings train as batched ensembles: every (learning rate, weight decay,
loss) of one hidden size is one member of an :class:`~embrm.rm.models.EnsembleMLP` with a
per-member AdamW (:class:`~embrm.rm.optim.MemberAdamW`) and a per-member loss, so BT and
CLF members of one width share every matmul (members of different widths cannot). Small
heads are where batching members pays on a CPU (3.0-3.8x over one after another in
``benchmarks/bench_ensemble.py``).

Every setting is judged by one criterion: the Bradley-Terry log-loss of its scores on the
validation pairs (for a CLF model, of the difference of its two logits), at its best
epoch or lambda, averaged over prompt-disjoint inner folds of the training and
validation pairs together (:func:`inner_splits`; 5 below 1,500 pairs, 3 from there):
one validation split of a few dozen pairs is too noisy to choose among 70 settings by.
Log-loss, not accuracy: it ranks settings by how well they rank *and* how sure they are,
and is far less noisy than accuracy on a few hundred pairs. :func:`choose` then takes
the simplest setting within one standard error of the least loss, and that setting
trains the final ensemble on the given training split. Choosing on the split that also stops
training makes the reported validation metrics slightly optimistic; ``embrm eval`` on a
held-out dataset is the unbiased check.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from itertools import product
from typing import Any

import numpy as np

from embrm import methods as registry
from embrm.errors import EmbrmError
from embrm.rm.logreg import LAMBDAS, lambda_path, prepare
from embrm.rm.pairs import Pairs
from embrm.rm.standardize import Standardizer
from embrm.rm.trainer import MemberSettings, TrainConfig, train

# The seed-size MLP's smaller (learning rate, weight decay) grid: 18 of its members were
# 57% of a whole grid's time (512 HH pairs).
SMALLER = {(1024, 512): ((3e-4, 1e-3), (0.0, 0.1))}
# A setting is judged on prompt-disjoint inner folds, not on one validation split of a
# few dozen pairs, whose noise decided the choice (at 300 HH pairs --tune was 0.017
# below the better reference): INNER_FOLDS below INNER_BELOW training + validation
# pairs, INNER_FOLDS_LARGE from there, where k grids would cost k times as much and one
# fold's validation pairs are many already.
INNER_FOLDS = 5
INNER_BELOW = 1500
INNER_FOLDS_LARGE = 3
CRITERION = ("Bradley-Terry log-loss, averaged over prompt-disjoint inner folds; the simplest setting within "
             "one standard error of the least")


@dataclass(frozen=True)
class Block:
    """Gradient-trained settings that share one batched ensemble: one width (``()``: linear),
    every (method, learning rate, weight decay)."""

    hidden: tuple[int, ...]
    methods: tuple[str, ...]
    lr: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
    weight_decay: tuple[float, ...] = (0.0, 1e-2, 1e-1)


@dataclass(frozen=True)
class Grid:
    """What ``--tune`` searches. The seed-size MLP gets a smaller block: 18 of its members
    were 57% of a whole grid's time (512 HH pairs), and on a few thousand pairs it did
    not lead the narrower MLPs or the linear models (README, "Small data")."""

    l2: tuple[float, ...] = LAMBDAS  # the "lambda" methods (logreg, logreg-clf)
    blocks: tuple[Block, ...] | None = None  # None: from the methods' tune_widths (default_blocks)
    families: tuple[str, ...] | None = None  # None: every method with a tune_kind (embrm.methods.tunable)


def default_blocks(families: tuple[str, ...]) -> tuple[Block, ...]:
    """One block per width that some "adam" method lists in its ``tune_widths``, holding
    every such method that lists it (BT and CLF of one width share a batched ensemble)."""
    widths: dict[tuple[int, ...], list[str]] = {}
    for name in families:
        m = registry.get(name)
        if m.tune_kind == "adam":
            for w in m.tune_widths:
                widths.setdefault(tuple(w), []).append(name)
    return tuple(Block(w, tuple(ms), *SMALLER.get(w, ())) for w, ms in widths.items())


def _row(method: str, standardize: bool, val_loss: float, seconds: float, lr: float | None = None,
         weight_decay: float | None = None, hidden: tuple[int, ...] = (), l2: float | None = None,
         best_epoch: int | None = None) -> dict[str, Any]:
    return {"method": method, "standardize": standardize, "lr": lr, "weight_decay": weight_decay,
            "hidden": list(hidden), "l2": l2, "val_loss": float(val_loss), "best_epoch": best_epoch,
            "seconds": round(seconds, 3)}


def _logreg_path(x: np.ndarray, tp: Pairs, vp: Pairs, cfg: TrainConfig, grid: Grid) -> list[dict[str, Any]]:
    """One solve per lambda of the grid, each on the training pairs, judged on validation."""
    t0 = time.perf_counter()
    std = Standardizer.fit(x, tp) if cfg.standardizes else None
    path = lambda_path(prepare(x, std), tp, vp, registry.get(cfg.method).net_shape(cfg)[1], grid.l2)
    seconds = time.perf_counter() - t0
    return [_row(cfg.method, cfg.standardizes, r["val_loss"], seconds, l2=r["l2"]) for r in path]


def _adam_grid(x: np.ndarray, tp: Pairs, vp: Pairs, cfg: TrainConfig, methods: list[str], block: Block
               ) -> list[dict[str, Any]]:
    """Every (method, learning rate, weight decay) of a block as one batched ensemble."""
    combos = list(product(methods, block.lr, block.weight_decay))
    hidden = block.hidden
    c = replace(cfg, method=methods[0], ensemble=len(combos), hidden=hidden, bootstrap=False)
    model = train(x, tp, vp, c, MemberSettings(lr=np.array([lr for _, lr, _ in combos]),
                                               weight_decay=np.array([wd for _, _, wd in combos]),
                                               clf=np.array([registry.get(m).clf_loss for m, _, _ in combos])))
    return [_row(m, c.standardizes, loss, model.log.seconds, lr, wd, hidden, best_epoch=epoch)
            for (m, lr, wd), loss, epoch in zip(combos, model.log.val_pair_loss, model.log.best_epoch)]


def _one_fit(x: np.ndarray, tp: Pairs, vp: Pairs, cfg: TrainConfig) -> list[dict[str, Any]]:
    """A method with no grid of its own (a plug-in): one fit, judged like every setting."""
    model = train(x, tp, vp, cfg)
    held = model.validation_model or model
    return [_row(cfg.method, model.config.standardizes, held.log.val_pair_loss[0] if held.log.val_pair_loss
                 else held.log.val_loss[0], held.log.seconds)]


def _grid(x: np.ndarray, train_pairs: Pairs, val_pairs: Pairs, cfg: TrainConfig, grid: Grid,
          families: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every setting of the grid trained on ``train_pairs`` and judged on ``val_pairs``."""
    results: list[dict[str, Any]] = []
    for method in families:
        kind = registry.get(method).tune_kind
        if kind == "lambda":
            results += _logreg_path(x, train_pairs, val_pairs, replace(cfg, method=method, ensemble=1), grid)
        elif kind == "fit":
            results += _one_fit(x, train_pairs, val_pairs, replace(cfg, method=method, ensemble=1))
    for block in grid.blocks if grid.blocks is not None else default_blocks(families):
        methods = [m for m in block.methods if m in families]
        # the methods of a block share its batched ensemble where they see the same features
        for standardize in sorted({replace(cfg, method=m).standardizes for m in methods}):
            same = [m for m in methods if replace(cfg, method=m).standardizes == standardize]
            results += _adam_grid(x, train_pairs, val_pairs, replace(cfg, standardize=standardize), same, block)
    return results


def _joined(a: Pairs, b: Pairs) -> Pairs:
    def pb(p: Pairs) -> np.ndarray:
        return p.prompt if p.prompt_b is None else p.prompt_b

    cross = a.prompt_b is not None or b.prompt_b is not None
    return Pairs(np.concatenate([a.a, b.a]), np.concatenate([a.b, b.b]), np.concatenate([a.y, b.y]),
                 np.concatenate([a.prompt, b.prompt]), np.concatenate([pb(a), pb(b)]) if cross else None)


def inner_splits(train_pairs: Pairs, val_pairs: Pairs, k: int, seed: int) -> list[tuple[Pairs, Pairs]]:
    """``k`` prompt-disjoint (train, validation) splits of the training and validation
    pairs together: each prompt is in one fold's validation pairs, a pair is trained on
    only where all its prompts are outside that fold (as :meth:`Pairs.among` rules)."""
    both = _joined(train_pairs, val_pairs)
    ids = [both.prompt] + ([both.prompt_b] if both.prompt_b is not None else [])
    prompts = np.unique(np.concatenate(ids))
    if len(prompts) < k:
        raise EmbrmError(f"--tune's {k} inner folds need at least {k} prompts; there are {len(prompts)}")
    fold = np.random.default_rng(seed).permutation(len(prompts)) % k
    return [(both.subset(both.among(prompts[fold != f])), both.subset(both.among(prompts[fold == f], held_out=True)))
            for f in range(k)]


def _setting(r: dict[str, Any]) -> tuple[Any, ...]:
    return r["method"], r["standardize"], r["lr"], r["weight_decay"], tuple(r["hidden"]), r["l2"]


def _over_folds(per_fold: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each setting once: its validation log-loss averaged over the inner folds (each
    fold's pairs weigh alike), with the fold losses and their standard error."""
    out = []
    for rows in zip(*per_fold):
        assert len({_setting(r) for r in rows}) == 1, "every inner fold runs the same grid in the same order"
        losses = np.array([r["val_loss"] for r in rows])
        out.append({**rows[0], "val_loss": float(losses.mean()), "fold_val_loss": losses.round(6).tolist(),
                    "val_loss_se": float(losses.std(ddof=1) / np.sqrt(len(losses))),
                    "seconds": round(sum(r["seconds"] for r in rows), 3),
                    "best_epoch": rows[0]["best_epoch"] and int(np.median([r["best_epoch"] for r in rows]))})
    return out


def inner_folds_for(n_pairs: int) -> int:
    """How many inner folds judge the settings: :data:`INNER_FOLDS` below
    :data:`INNER_BELOW` training and validation pairs, :data:`INNER_FOLDS_LARGE` from
    there (each fold's grid costs about as much as the whole grid did on one split)."""
    return INNER_FOLDS if n_pairs < INNER_BELOW else INNER_FOLDS_LARGE


def _complexity(r: dict[str, Any]) -> tuple[int, int]:
    """Simpler first: exact logistic regressions, then gradient-trained linear models,
    then MLPs by their total hidden width."""
    return (0 if r["l2"] is not None else 1, sum(r["hidden"]))


def choose(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The one-standard-error rule: among the settings whose mean inner-fold log-loss is
    within one standard error of the least, the simplest (:func:`_complexity`), and of
    those the least loss. Where there is no standard error (one split), the least loss.

    Why: on 300-2,312 real HH pairs, the setting of least validation loss was usually an
    MLP that then scored below the plain logistic regression on held-out folds: among
    some 70 settings the least loss is partly luck. The rule (Breiman et al. 1984;
    Hastie et al., *Elements of Statistical Learning* 7.10) keeps a flexible model only
    where its lead is larger than the folds' noise."""
    best = min(results, key=lambda r: r["val_loss"])
    bar = best["val_loss"] + best.get("val_loss_se", 0.0)
    return min((r for r in results if r["val_loss"] <= bar), key=lambda r: (_complexity(r), r["val_loss"]))


def tune(x: np.ndarray, train_pairs: Pairs, val_pairs: Pairs, cfg: TrainConfig, grid: Grid = Grid(),
         families: tuple[str, ...] | None = None, inner_folds: int | None = None
         ) -> tuple[TrainConfig, list[dict[str, Any]]]:
    """The setting :func:`choose` picks as a config, and every setting's result.

    ``families`` restricts the search (``embrm train --tune --method bt`` tunes BT alone);
    each family standardises its features as ``cfg.standardize`` says, or by its default.
    ``inner_folds`` (default: :func:`inner_folds_for`) above 1 judges every setting by its
    mean log-loss over that many prompt-disjoint folds of the training and validation
    pairs together, instead of on the one validation split.
    """
    families = tuple(families or grid.families or registry.tunable())
    untunable = [f for f in families if registry.get(f).tune_kind is None]
    if untunable:
        why = getattr(registry.get(untunable[0]), "untuned_because", "it has no grid")
        raise EmbrmError(f"--tune does not cover {', '.join(untunable)} ({why}); tune {', '.join(registry.tunable())}")
    k = inner_folds if inner_folds is not None else inner_folds_for(len(train_pairs) + len(val_pairs))
    if k > 1:
        results = _over_folds([_grid(x, tp, vp, cfg, grid, families)
                               for tp, vp in inner_splits(train_pairs, val_pairs, k, cfg.seed)])
    else:
        results = _grid(x, train_pairs, val_pairs, cfg, grid, families)
    if not results:
        raise EmbrmError(f"nothing to tune: families {', '.join(families)}; use {', '.join(registry.tunable())}")
    best = choose(results)
    chosen = replace(cfg, method=best["method"], standardize=best["standardize"], l2=best["l2"],
                     lr=best["lr"] if best["lr"] is not None else cfg.lr,
                     weight_decay=best["weight_decay"] if best["weight_decay"] is not None else cfg.weight_decay,
                     hidden=tuple(best["hidden"]) if best["hidden"] else cfg.hidden)
    return chosen, results


def describe(r: dict[str, Any]) -> str:
    """A setting in words: ``bt 256 (lr 0.001, weight decay 0)``, ``logreg (lambda 0.1)``."""
    std = ", standardised" if r["standardize"] else ""
    if r["l2"] is not None:
        return f"{r['method']} (lambda {r['l2']:.3g}{std})"
    width = f" {','.join(map(str, r['hidden']))}" if r["hidden"] else ""
    return f"{r['method']}{width} (lr {r['lr']:g}, weight decay {r['weight_decay']:g}{std})"


def summary(results: list[dict[str, Any]]) -> str:
    """One line: what was picked, by what, and the best of every other family."""
    best = choose(results)
    least = min(results, key=lambda r: r["val_loss"])
    others = {}
    for r in sorted(results, key=lambda r: r["val_loss"]):
        others.setdefault(r["method"], r)
    runners = [f"{describe(r)} {r['val_loss']:.4f}" for m, r in others.items() if m != best["method"]]
    if "fold_val_loss" in best:
        how = (f"the simplest within one standard error of the least mean validation log-loss over "
               f"{len(best['fold_val_loss'])} inner folds ({best['val_loss']:.4f}; least {least['val_loss']:.4f} "
               f"+ {least['val_loss_se']:.4f})")
    else:
        how = f"the least validation log-loss ({best['val_loss']:.4f})"
    line = f"tuned over {len(results)} settings: picked {describe(best)}, {how}"
    return line + (f"; best of the other families: {'; '.join(runners)}" if runners else "")
