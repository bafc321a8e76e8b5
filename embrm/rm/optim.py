"""AdamW with a learning rate and a weight decay per ensemble member.

Member weights are stacked along the first dimension (see
:class:`~embrm.rm.models.EnsembleMLP`), so one optimiser updates every member, and
``torch.optim.AdamW`` takes one learning rate for a whole tensor. A hyperparameter grid
trained as one batched ensemble (``embrm train --tune``) needs a different rate and
decay per member; this is the same update with ``lr`` and ``weight_decay`` as ``(M,)``
tensors broadcast over each member's slice.

Uniform members keep torch's fused AdamW (one kernel a tensor, several times faster
on a CPU); the tests check that this update equals it step for step.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch


class MemberAdamW:
    """Decoupled weight decay (Loshchilov & Hutter) with per-member ``lr`` and ``weight_decay``."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: torch.Tensor, weight_decay: torch.Tensor,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = [p for p in params if p.requires_grad]
        members = len(lr)
        for p in self.params:
            if p.shape[0] != members:
                raise ValueError(f"a parameter of shape {tuple(p.shape)} is not stacked by {members} members")
        self.lr = lr.float()
        self.wd = weight_decay.float()
        self.b1, self.b2 = betas
        self.eps = eps
        self.t = 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        c1 = 1 - self.b1 ** self.t
        c2 = 1 - self.b2 ** self.t
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)
            lr, wd = self.lr.view(shape), self.wd.view(shape)
            p.mul_(1 - lr * wd)
            m.lerp_(p.grad, 1 - self.b1)
            v.mul_(self.b2).addcmul_(p.grad, p.grad, value=1 - self.b2)
            denom = (v / c2).sqrt_().add_(self.eps)
            p.sub_(lr * (m / c1) / denom)
