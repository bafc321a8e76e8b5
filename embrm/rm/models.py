"""An ensemble of MLP reward models as one batched model.

Member weights are stacked: layer l holds ``(M, d_in, d_out)``, and one ``baddbmm``
runs a whole group of members (all M unless their activations would overflow the cache,
see :func:`members_per_group`), so a step costs a dispatch per layer and group. That
pays where per-step overhead dominates (small heads, linear models, small batches, a
GPU); for the seed's 1M-parameter MLP on a few CPU cores each member's matmuls already
run at the GEMM rate and batching saves little (see ``benchmarks/bench_ensemble.py``).
With ``hidden=()`` each member is a linear model (used for linear Bradley-Terry).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from embrm.errors import EmbrmError

# Hidden-activation bytes that one batched matmul over a group of members may produce.
# Measured on the 2-core dev machine (benchmarks/bench_ensemble.py, three runs): all 10
# members of the seed-size MLP at D=576 in one group ((10, 2048, 1024) activations, 42 MB
# in bf16) trained 11-31% slower than groups of one to five (at D=2048: both ways), while
# small heads and linear models were fastest with every member in one group.
CACHE_BUDGET = 8 << 20


def members_per_group(members: int, rows: int, hidden: tuple[int, ...], itemsize: int) -> int:
    """How many members share one batched matmul: as many as keep a group's widest hidden
    activation (where ReLU and its backward run) within :data:`CACHE_BUDGET`. A linear
    model has none, so all its members go together."""
    if not hidden:
        return members
    return max(1, min(members, CACHE_BUDGET // (rows * max(hidden) * itemsize)))


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

    def forward(self, x: torch.Tensor, group: int | None = None) -> torch.Tensor:
        """``x``: (N, D) shared by all members, or (M, N, D) one batch per member -> (M, N).

        Matmuls run in ``x``'s dtype: pass bf16 rows for bf16 compute against fp32
        master weights (cast per call, so gradients still reach the fp32 weights).
        ``group`` runs the members that many at a time (see :meth:`forward_rows`).
        """
        if x.dim() == 2:
            return self.forward_rows(x, None, group)
        group = group or members_per_group(self.members, x.shape[1], self.hidden, x.element_size())
        return torch.cat([self._chain(h, layers) for h, layers in zip(x.split(group), self._layers(x.dtype, group))])

    def forward_rows(self, table: torch.Tensor, index: torch.Tensor | None, group: int | None = None) -> torch.Tensor:
        """Rewards (M, R) where member m scores rows ``index[m]`` (M, R) of ``table`` (T, D).

        ``index=None`` has every member score every row of ``table``. Members run
        ``group`` at a time (by default as many as :func:`members_per_group` allows for
        the number of rows): each group gathers its own rows and does
        one batched matmul per layer. On a CPU a group should be small enough for its
        activations to stay in cache: a (10, 2048, 1024) activation does not, and then
        one batched matmul over all members runs slower than the same members one by
        one.
        """
        rows = len(table) if index is None else index.shape[1]
        group = group or members_per_group(self.members, rows, self.hidden, table.element_size())
        out = []
        for g, layers in enumerate(self._layers(table.dtype, group)):
            if index is None:
                out.append(self._chain_shared(table, layers))
                continue
            idx = index[g * group:(g + 1) * group]
            h = table.index_select(0, idx.reshape(-1)).view(*idx.shape, table.shape[1])
            out.append(self._chain(h, layers))
        return torch.cat(out)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """``(M, N, F)``: each member's input to its last layer for rows ``x`` (N, D).

        The reward is ``penultimate(x) @ w_last + b_last``, so these are the features in
        which the last layer is a linear Bradley-Terry model: active learning's Fisher
        information lives there (:mod:`embrm.rm.active`). For a linear model (no hidden
        layer) they are the embedding itself, F = D.
        """
        layers = self._layers(x.dtype, self.members)[0]
        h = x.expand(self.members, *x.shape)
        for w, b in layers[:-1]:
            h = torch.relu(torch.baddbmm(b, h, w))
        return h

    def last_layer(self) -> torch.Tensor:
        """``(M, F)``: each member's last-layer weights (its bias cancels in a pair's score difference)."""
        return self.weights[-1].detach()[:, :, 0]

    def _chain_shared(self, x: torch.Tensor, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Every member of a group scores the same rows ``x`` (N, D): the first layer is then
        one (N, D) x (D, G*H) matmul instead of G batched ones over a broadcast copy of
        ``x``: 1.02x to 1.11x the items per second for 5 members of (1024, 512) at 512 rows
        on the 2-core machine, with nothing else running (the same numbers to float32
        rounding)."""
        (w, b), rest = layers[0], layers[1:]
        g, d, h1 = w.shape
        h = torch.addmm(b.permute(1, 0, 2).reshape(1, g * h1), x, w.permute(1, 0, 2).reshape(d, g * h1))
        h = h.view(len(x), g, h1).transpose(0, 1)
        if not rest:
            return h.squeeze(-1)
        return self._chain(torch.relu_(h), rest)

    def _layers(self, dtype: torch.dtype, group: int) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Per member group, each layer's (weight, bias) in ``dtype``: one cast and one split
        a layer, so that autograd joins the groups' gradients with one copy."""
        per_layer = [zip(w.to(dtype).split(group), b.to(dtype).split(group)) for w, b in zip(self.weights, self.biases)]
        return [list(layers) for layers in zip(*per_layer)]

    def _chain(self, h: torch.Tensor, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        last = len(layers) - 1
        for i, (w, b) in enumerate(layers):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = torch.relu_(h)  # in place: baddbmm's backward does not need its output
        return h.squeeze(-1)

    def state(self) -> dict[str, torch.Tensor]:
        out = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            out[f"w{i}"] = w.detach().clone()
            out[f"b{i}"] = b.detach().clone()
        return out

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Copy ``state`` in: exactly this net's tensors with exactly its shapes, checked
        first (``copy_`` alone would broadcast a smaller tensor into a wrong model)."""
        want = {f"{c}{i}": tuple(t.shape) for c, ts in (("w", self.weights), ("b", self.biases))
                for i, t in enumerate(ts)}
        got = {k: tuple(v.shape) for k, v in state.items()}
        if got != want:
            bad = next((k for k in want if got.get(k) != want[k]), None) or sorted(set(got) - set(want))[0]
            raise EmbrmError(f"weights {bad} have shape {list(got[bad]) if bad in got else 'missing'}; this "
                             f"ensemble needs {list(want[bad]) if bad in want else 'no such tensor'}")
        with torch.no_grad():
            for i, (w, b) in enumerate(zip(self.weights, self.biases)):
                w.copy_(state[f"w{i}"])
                b.copy_(state[f"b{i}"])

    def member_state(self, state: dict[str, torch.Tensor], m: int, into: dict[str, torch.Tensor]) -> None:
        """Copy member ``m``'s weights from ``state`` into ``into`` (for early stopping)."""
        for k, v in state.items():
            into[k][m] = v[m]
