"""``--method logreg``: L2-regularised logistic regression, solved exactly by damped Newton.

Why a solver and not one more Adam run: with a few hundred to a few thousand pairs and
hundreds of dimensions, a linear model fitted to convergence with the right penalty is
hard to beat (on 600 HH-RLHF pairs it led the seed paper's MLP by about 2.5 points), and
Adam with early stopping never reaches that optimum: where it stops depends on the
learning rate, the batch and the patience, not on the data. The problem is convex and
small, so Newton's method reaches the optimum to machine precision in a few steps.

Two forms, as for the MLPs:

* ``logreg`` (Bradley-Terry): P(a beats b) = sigmoid(w . (x_a - x_b)). No intercept: it
  would cancel in the difference, and without one the model is antisymmetric (swapping
  a pair flips the probability), so each pair is used once in its given order;
* ``logreg-clf`` (pointwise): each response alone, P(winner) = sigmoid(w . x + b), the
  intercept unpenalised.

The objective is ``mean log-loss + lambda / 2 * |w|^2`` (a bootstrap member weights the
mean by its resample counts). Lambda is chosen from :data:`LAMBDAS` by the pairwise
log-loss on the validation split (fitted on the training split, from the largest lambda
down, each solve warm-started from the last), then the model is refitted on training +
validation at that lambda: the validation pairs are too valuable on small data to spend
on choosing one number only. An ensemble of M > 1 members spreads around that exact fit
as M bootstrap resamples of the pairs say it varies (see :func:`_members`).

The weights are saved as a linear :class:`~embrm.rm.models.EnsembleMLP` (``hidden=()``),
so scoring, evaluation and serving share the code of ``--method linear``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from embrm.errors import EmbrmError
from embrm.rm.models import EnsembleMLP
from embrm.rm.pairs import Pairs

if TYPE_CHECKING:
    from embrm.rm.standardize import Standardizer
    from embrm.rm.trainer import TrainConfig

# Half-decade steps, 1e-3 to 100, on the penalty of the *mean* log-loss. On standardised
# SmolLM2 vectors of 512 HH-RLHF pairs the validation optimum was 0.3 to 3 (an optimum
# at either end of the grid would say the grid is too short; benchmarks/bench_small_data.py
# records the lambda of every fold).
LAMBDAS = tuple(float(v) for v in 10.0 ** np.arange(-3.0, 2.01, 0.5))
TOL = 1e-10  # gradient norm at which a solve stops (float64)
MAX_ITER = 100


def pair_log_loss(score_a: torch.Tensor, score_b: torch.Tensor, y: torch.Tensor) -> float:
    """Mean Bradley-Terry log-loss of P(a beats b) = sigmoid(s_a - s_b) against labels ``y``:
    the one criterion every family is judged by (see :mod:`embrm.rm.tune`)."""
    return float(F.binary_cross_entropy_with_logits((score_a - score_b).double(), y.double()))


class LogisticProblem:
    """min_w  sum_i c_i log(1 + exp(-s_i f_i.w)) / sum_i c_i + lambda / 2 |w|^2 (s_i = +-1),
    with an optional unpenalised intercept.

    Where there are more dimensions than rows, the optimum lies in the span of the rows
    (the gradient of the loss is a combination of them, and so is lambda w at the
    optimum), so the problem is solved in an orthonormal basis of that span: the same
    solution, at the cost of an n x n instead of a D x D Hessian.
    """

    def __init__(self, f: torch.Tensor, y: torch.Tensor, intercept: bool = False):
        f = f.double()
        self.dim, self.intercept = f.shape[1], intercept
        self.basis = torch.linalg.qr(f.T).Q if f.shape[1] > f.shape[0] else None  # (D, n)
        g = f @ self.basis if self.basis is not None else f
        if intercept:
            g = torch.cat([g, torch.ones(len(g), 1, dtype=g.dtype)], 1)
        self.f, self.y = g, y.double()
        self.penalised = torch.ones(g.shape[1], dtype=g.dtype)
        if intercept:
            self.penalised[-1] = 0.0

    def _inner(self, w: torch.Tensor) -> torch.Tensor:
        """A solution (D [+ 1],) in the problem's own coordinates."""
        if self.basis is None:
            return w
        v = self.basis.T @ w[: self.dim]
        return torch.cat([v, w[self.dim:]]) if self.intercept else v

    def _outer(self, v: torch.Tensor) -> torch.Tensor:
        if self.basis is None:
            return v
        w = self.basis @ v[: self.basis.shape[1]]
        return torch.cat([w, v[self.basis.shape[1]:]]) if self.intercept else w

    def objective(self, v: torch.Tensor, lam: float, c: torch.Tensor) -> torch.Tensor:
        z = self.f @ v
        return (c * (F.softplus(z) - self.y * z)).sum() + 0.5 * lam * (self.penalised * v * v).sum()

    def gradient(self, v: torch.Tensor, lam: float, c: torch.Tensor) -> torch.Tensor:
        return self.f.T @ (c * (torch.sigmoid(self.f @ v) - self.y)) + lam * self.penalised * v

    def solve(self, lam: float, weight: torch.Tensor | None = None, w0: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, int]:
        """The minimiser (D [+ 1],) float64, intercept last, and the Newton steps taken.

        Damped Newton: the Newton direction by Cholesky, then halving the step until the
        objective falls by at least 1e-4 of its predicted decrease (Armijo), so that it
        converges from any start; near the optimum full steps converge quadratically (and
        are taken without a line search once the predicted decrease is below what float64
        resolves in the objective).
        """
        if lam <= 0:
            raise EmbrmError(f"the L2 penalty must be positive, got {lam:g}")
        c = torch.ones(len(self.y), dtype=self.f.dtype) if weight is None else weight.double()
        c = c / c.sum()
        v = torch.zeros(self.f.shape[1], dtype=self.f.dtype) if w0 is None else self._inner(w0.double())
        steps = 0
        for steps in range(1, MAX_ITER + 1):  # noqa: B007 (the count is returned)
            g = self.gradient(v, lam, c)
            if float(g.norm()) < TOL:
                break
            p = torch.sigmoid(self.f @ v)
            h = (self.f * (c * p * (1 - p))[:, None]).T @ self.f
            h.diagonal().add_(lam * self.penalised)
            chol, info = torch.linalg.cholesky_ex(h)
            if int(info):  # only an unpenalised intercept with saturated probabilities can get here
                chol = torch.linalg.cholesky(h + 1e-10 * torch.eye(len(h), dtype=h.dtype))
            step = torch.cholesky_solve(g[:, None], chol)[:, 0]
            j0, slope, t = float(self.objective(v, lam, c)), float(g @ step), 1.0
            if slope < 1e-12 * max(1.0, abs(j0)):  # quadratic region: a decrease the objective cannot resolve
                v = v - step
                continue
            while float(self.objective(v - t * step, lam, c)) > j0 - 1e-4 * t * slope and t > 1e-12:
                t /= 2
            if t <= 1e-12:  # no decrease left at float64 precision
                break
            v = v - t * step
        return self._outer(v), steps


def features(z: torch.Tensor, pairs: Pairs, pointwise: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Difference vectors and labels (Bradley-Terry), or each response with 1 for the
    winner and 0 for the loser (pointwise)."""
    a, b = torch.from_numpy(pairs.a), torch.from_numpy(pairs.b)
    y = torch.from_numpy(pairs.y.astype(np.float64))
    if pointwise:
        return z[torch.cat([a, b])], torch.cat([y, 1 - y])
    return z[a] - z[b], y


def prepare(x: np.ndarray | torch.Tensor, std: Standardizer | None) -> torch.Tensor:
    """The features a fit sees: standardised where asked, float64 on the CPU."""
    xt = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    return (std.apply(xt) if std is not None else xt).detach().cpu().double()


def lambda_path(z: torch.Tensor, tp: Pairs, vp: Pairs, pointwise: bool, lambdas: tuple[float, ...] = LAMBDAS
                ) -> list[dict]:
    """For each lambda (strongest penalty first, each solve warm-started from the last): the
    fit on ``tp`` and its pairwise log-loss on ``vp``. Rows ``{l2, val_loss, w, steps}``,
    in increasing lambda."""
    problem = LogisticProblem(*features(z, tp, pointwise), intercept=pointwise)
    va, vb, vy = torch.from_numpy(vp.a), torch.from_numpy(vp.b), torch.from_numpy(vp.y)
    path, w = [], None
    for lam in sorted(lambdas, reverse=True):
        w, steps = problem.solve(lam, w0=w)
        s = z @ w[: z.shape[1]]
        path.append({"l2": lam, "val_loss": pair_log_loss(s[va], s[vb], vy), "w": w, "steps": steps})
    return path[::-1]


def _members(problem: LogisticProblem, n_pairs: int, pointwise: bool, lam: float, members: int, seed: int,
             exact: torch.Tensor) -> tuple[list[torch.Tensor], int]:
    """M members: the exact fit, and for M > 1 the bootstrap fits' deviations from their
    own mean added to it, so the members' mean is the exact fit.

    Why centred: plain bagging of this model cost 2.5 points of held-out accuracy on 512
    HH-RLHF pairs (0.594 against 0.619 for the exact fit: each resample holds about 63%
    of the pairs, and three of them do not average that back). Centred, the mean
    aggregation scores as the exact fit while the members still spread as the bootstrap
    says the weights vary (what ``min`` and ``mean-var`` use).
    """
    if members == 1:
        return [exact], 0
    boot, steps = [], 0
    for m in range(members):
        counts = np.bincount(np.random.default_rng([seed, m]).integers(0, n_pairs, n_pairs), minlength=n_pairs)
        c = torch.from_numpy(np.tile(counts, 2) if pointwise else counts).double()
        w, k = problem.solve(lam, weight=c, w0=exact)
        boot.append(w)
        steps += k
    centre = torch.stack(boot).mean(0)
    return [exact + w - centre for w in boot], steps


def _net(ws: list[torch.Tensor], dim: int, pointwise: bool) -> EnsembleMLP:
    net = EnsembleMLP(len(ws), dim, (), bias=pointwise)
    with torch.no_grad():
        net.weights[0].copy_(torch.stack([w[:dim] for w in ws])[:, :, None])
        if pointwise:
            net.biases[0].copy_(torch.stack([w[dim:] for w in ws])[:, :, None])
    return net.eval()


@dataclass
class LogregFit:
    """What :func:`fit_logreg` found: the chosen lambda, the ensemble refitted on training
    + validation pairs, the same ensemble fitted on the training pairs alone (what the
    validation metrics describe), the validation loss of every lambda tried, and the
    Newton steps and seconds it took. :func:`embrm.rm.trainer.train` makes the model."""

    l2: float
    net: EnsembleMLP
    held_net: EnsembleMLP
    path: list[dict[str, float]]
    val_loss: float
    steps: int
    seconds: float


def fit_logreg(x: np.ndarray | torch.Tensor, tp: Pairs, vp: Pairs, cfg: TrainConfig,
               std: Standardizer | None, pointwise: bool = False) -> LogregFit:
    """Choose lambda on ``vp`` (unless ``cfg.l2`` is set), refit on ``tp`` + ``vp``.

    The fit on ``tp`` alone is kept too (``held_net``): the refit has seen the validation
    pairs, so metrics on them must come from the model that has not.
    """
    t0 = time.perf_counter()
    z = prepare(x, std)
    dim = z.shape[1]
    path = lambda_path(z, tp, vp, pointwise, (cfg.l2,) if cfg.l2 is not None else LAMBDAS)
    best = min(path, key=lambda r: r["val_loss"])
    lam, steps = best["l2"], sum(r["steps"] for r in path)
    held, k1 = _members(LogisticProblem(*features(z, tp, pointwise), intercept=pointwise), len(tp), pointwise,
                        lam, cfg.ensemble, cfg.seed, best["w"])
    both = Pairs(*(np.concatenate([getattr(tp, f), getattr(vp, f)]) for f in ("a", "b", "y", "prompt")))
    problem = LogisticProblem(*features(z, both, pointwise), intercept=pointwise)
    exact, k2 = problem.solve(lam, w0=best["w"])  # the refit, warm-started from the training-pairs fit
    full, k3 = _members(problem, len(both), pointwise, lam, cfg.ensemble, cfg.seed, exact)
    return LogregFit(l2=lam, net=_net(full, dim, pointwise), held_net=_net(held, dim, pointwise),
                     path=[{"l2": r["l2"], "val_loss": r["val_loss"]} for r in path], val_loss=best["val_loss"],
                     steps=steps + k1 + k2 + k3, seconds=time.perf_counter() - t0)
