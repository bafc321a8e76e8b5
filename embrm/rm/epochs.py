"""The pieces of the ensemble trainer's epoch loop (:func:`embrm.rm.trainer.train`): the
losses, one epoch of minibatch steps, the validation losses and early stopping.

Every member of a batched ensemble trains at once: a minibatch holds one row of pairs
per member, and a step's loss is the members' losses summed (they share no parameter,
so the sum's gradient is each member's own).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from embrm.rm.models import EnsembleMLP
from embrm.rm.pairs import Pairs


def bt_loss(ra: torch.Tensor, rb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(ra - rb, y, reduction="none").mean(1)


def pair_loss(ra: torch.Tensor, rb: torch.Tensor, y: torch.Tensor, clf: torch.Tensor | None) -> torch.Tensor:
    """Per-member mean loss, (M,), from fp32 rewards ``ra``, ``rb`` (M, B) and labels ``y``.

    ``clf`` (M,) bool marks the members trained as CLF (each response alone: winner 1,
    loser 0), the rest Bradley-Terry; ``None``: all Bradley-Terry. A grid can thus train
    both losses in one batched ensemble.
    """
    bt = bt_loss(ra, rb, y)
    if clf is None:
        return bt
    pointwise = (F.binary_cross_entropy_with_logits(ra, y, reduction="none")
                 + F.binary_cross_entropy_with_logits(rb, 1 - y, reduction="none")).mean(1) / 2
    return torch.where(clf, pointwise, bt)


def step_loss(net: EnsembleMLP, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, y: torch.Tensor,
               clf: torch.Tensor | None, group: int | None) -> torch.Tensor:
    """Per-member loss on one minibatch; ``a``, ``b``, ``y``: (M, B), one row of pairs per member.

    Both sides of every pair go through the net as one (M, 2B) batch of rows of ``x``,
    gathered group by group, already in ``x``'s compute dtype.
    """
    r = net.forward_rows(x, torch.cat([a, b], 1), group).float()
    return pair_loss(r[:, : a.shape[1]], r[:, a.shape[1]:], y, clf)


class Validation:
    """Validation loss of every member, scoring each validation item once.

    Members share the validation pairs, so the items are scored as one (N, D) batch that
    all members read, instead of gathering a copy of every pair for every member.
    """

    def __init__(self, x: torch.Tensor, pairs: Pairs, members: int, chunk: int = 8192):
        items, inverse = np.unique(np.concatenate([pairs.a, pairs.b]), return_inverse=True)
        dev = x.device
        self.x, self.items, self.chunk = x, torch.from_numpy(items).to(dev), chunk
        self.a = torch.from_numpy(inverse[: len(pairs)]).long().to(dev)
        self.b = torch.from_numpy(inverse[len(pairs):]).long().to(dev)
        self.y = torch.from_numpy(pairs.y.astype(np.float32)).to(dev).expand(members, len(pairs))

    def __call__(self, net: EnsembleMLP, clf: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
        """Each member's loss (its own: early stopping) and Bradley-Terry log-loss (comparable
        across losses and model families: :mod:`embrm.rm.tune` chooses by it)."""
        with torch.inference_mode():
            r = torch.cat([net(self.x.index_select(0, self.items[s:s + self.chunk])).float()
                           for s in range(0, len(self.items), self.chunk)], 1)
            ra, rb = r[:, self.a], r[:, self.b]
            return pair_loss(ra, rb, self.y, clf).cpu().numpy(), bt_loss(ra, rb, self.y).cpu().numpy()


def run_epoch(net: EnsembleMLP, opt: Any, xt: torch.Tensor, pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
              clf: torch.Tensor | None, group: int | None, gens: list[np.random.Generator], batch: int,
              bootstrap: bool) -> int:
    """One pass over the pairs ``(a, b, y)``, each member in its own order (or its own
    bootstrap sample); returns the optimiser steps taken."""
    ta, tb, ty = pairs
    n, device = len(ta), ta.device
    net.train()
    if bootstrap:
        order = torch.from_numpy(np.stack([g.integers(0, n, n) for g in gens])).to(device)
    else:
        order = torch.from_numpy(np.stack([g.permutation(n) for g in gens])).to(device)
    steps = 0
    for s in range(0, n, batch):
        idx = order[:, s:s + batch]
        loss = step_loss(net, xt, ta[idx], tb[idx], ty[idx], clf, group)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # members are independent: the sum's gradient is each one's
        opt.step()
        steps += 1
    return steps


class EarlyStopping:
    """Per member: keep the weights of its best validation epoch; stop when every member
    has gone ``patience`` epochs without improving, once ``min_epochs`` have run (so a
    few hundred pairs still get ``MIN_STEPS`` optimiser steps)."""

    def __init__(self, state: dict[str, torch.Tensor], members: int, patience: int, min_epochs: int):
        self.best = state
        self.best_loss = np.full(members, np.inf)
        self.best_pair_loss = np.full(members, np.inf)
        self.best_epoch = [0] * members
        self.stale = np.zeros(members, int)
        self.patience, self.min_epochs = patience, min_epochs

    def update(self, net: EnsembleMLP, epoch: int, val_loss: np.ndarray, val_pair_loss: np.ndarray) -> bool:
        """Record an epoch's validation losses; whether training should stop now."""
        state = net.state()
        for i in range(len(self.best_loss)):
            if val_loss[i] < self.best_loss[i] - 1e-5:
                self.best_loss[i], self.best_epoch[i], self.stale[i] = val_loss[i], epoch, 0
                self.best_pair_loss[i] = val_pair_loss[i]
                net.member_state(state, i, self.best)
            else:
                self.stale[i] += 1
        return epoch >= self.min_epochs and bool((self.stale >= self.patience).all())
