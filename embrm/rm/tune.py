"""``embrm train --tune``: learning rate, weight decay and hidden size from a small grid.

The grid trains as batched ensembles: every (learning rate, weight decay) pair is one
member of an :class:`~embrm.rm.models.EnsembleMLP` with a per-member AdamW
(:class:`~embrm.rm.optim.MemberAdamW`), one ensemble per hidden size (members of
different widths cannot share a batched matmul). Small heads are where batching members
pays on a CPU (3.0-3.8x over one after another in ``benchmarks/bench_ensemble.py``).

Each setting is judged by its best validation loss on the run's validation prompts, and
the chosen setting then trains the final ensemble. Choosing on the same validation split
that later stops training makes the reported validation metrics slightly optimistic;
``embrm eval`` on a held-out dataset is the unbiased check.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import product
from typing import Any

import numpy as np

from embrm.errors import EmbrmError
from embrm.rm.pairs import Pairs
from embrm.rm.trainer import TrainConfig, train


@dataclass(frozen=True)
class Grid:
    lr: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
    weight_decay: tuple[float, ...] = (0.0, 1e-2, 1e-1)
    hidden: tuple[tuple[int, ...], ...] = ((64,), (256,), (1024, 512))


def tune(x: np.ndarray, train_pairs: Pairs, val_pairs: Pairs, cfg: TrainConfig, grid: Grid = Grid()
         ) -> tuple[TrainConfig, list[dict[str, Any]]]:
    """The best setting of the grid by validation loss, and every setting's result."""
    if cfg.method == "lgbm":
        raise EmbrmError("--tune covers the neural methods (bt, clf, linear); LightGBM has its own early stopping")
    combos = list(product(grid.lr, grid.weight_decay))
    results: list[dict[str, Any]] = []
    for hidden in ((),) if cfg.method == "linear" else grid.hidden:
        c = replace(cfg, ensemble=len(combos), hidden=hidden, bootstrap=False)
        model = train(x, train_pairs, val_pairs, c, member_lr=np.array([lr for lr, _ in combos]),
                      member_wd=np.array([wd for _, wd in combos]))
        for (lr, wd), loss, epoch in zip(combos, model.log.val_loss, model.log.best_epoch):
            results.append({"lr": lr, "weight_decay": wd, "hidden": list(hidden), "val_loss": loss,
                            "best_epoch": epoch, "seconds": model.log.seconds})
    best = min(results, key=lambda r: r["val_loss"])
    chosen = replace(cfg, lr=best["lr"], weight_decay=best["weight_decay"],
                     hidden=tuple(best["hidden"]) if best["hidden"] else cfg.hidden)
    return chosen, results
