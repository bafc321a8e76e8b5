"""An ensemble of MLP reward models as one batched model.

Member weights are stacked: layer l holds ``(M, d_in, d_out)``, and one ``baddbmm``
runs all M members at once. On a CPU this turns M small matmuls into one large one and
is where most of the ensemble speed-up comes from. With ``hidden=()`` each member is a
linear model (used for linear Bradley-Terry).
"""
from __future__ import annotations

import math

import torch
from torch import nn


class EnsembleMLP(nn.Module):
    """M independent MLPs D -> hidden... -> 1 with ReLU, evaluated together."""

    def __init__(self, members: int, dim: int, hidden: tuple[int, ...] = (1024, 512), seed: int = 0,
                 bias: bool = True):
        super().__init__()
        self.members, self.dim, self.hidden, self.has_bias = members, dim, tuple(hidden), bias
        sizes = [dim, *hidden, 1]
        g = torch.Generator().manual_seed(seed)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(d_in)  # nn.Linear's default init, per member
            self.weights.append(nn.Parameter((torch.rand(members, d_in, d_out, generator=g) * 2 - 1) * bound))
            self.biases.append(nn.Parameter((torch.rand(members, 1, d_out, generator=g) * 2 - 1) * bound
                                            if bias else torch.zeros(members, 1, d_out), requires_grad=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (N, D) shared by all members, or (M, N, D) one batch per member -> (M, N)."""
        h = x.expand(self.members, *x.shape) if x.dim() == 2 else x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b.to(h.dtype), h, w.to(h.dtype))
            if i < last:
                h = torch.relu(h)
        return h.squeeze(-1)

    def state(self) -> dict[str, torch.Tensor]:
        out = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            out[f"w{i}"] = w.detach().clone()
            out[f"b{i}"] = b.detach().clone()
        return out

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for i, (w, b) in enumerate(zip(self.weights, self.biases)):
                w.copy_(state[f"w{i}"])
                b.copy_(state[f"b{i}"])

    def member_state(self, state: dict[str, torch.Tensor], m: int, into: dict[str, torch.Tensor]) -> None:
        """Copy member ``m``'s weights from ``state`` into ``into`` (for early stopping)."""
        for k, v in state.items():
            into[k][m] = v[m]
