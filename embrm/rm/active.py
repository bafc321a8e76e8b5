"""Active reward modeling: which candidate pairs to send to annotators next.

Every rule takes a trained reward model, the item vectors ``x``, candidate pairs (item
indices ``a``, ``b`` into ``x``) and the pairs already labelled, and returns a batch of
``k`` candidate indices, the most useful first:

* ``random`` -- a uniform sample, the baseline every other rule must beat;
* ``uncertainty`` -- the pairs whose predicted p(a beats b) is nearest 0.5 (the ensemble
  mean's score difference nearest 0);
* ``disagreement`` -- the pairs on whose score difference the ensemble members disagree
  most (their standard deviation); needs an ensemble;
* ``dopt`` -- D-optimal design on the last layer (Shen, Sun and Ton 2025, "Active Reward
  Modeling", arXiv 2502.04354). With penultimate features ``f`` (the embedding itself
  for a linear model) the reward is linear in the last layer's weights, and a pair's
  Fisher information about them is ``p (1 - p) z z^T`` with ``z = f_a - f_b`` and ``p``
  the predicted probability that ``a`` wins. The batch greedily maximises the
  log-determinant of the prior plus the batch's summed information;
* ``dopt-past`` -- the same, with the labelled pairs' information already in the matrix,
  so the batch adds what the labelled pairs lack.

**Why greedy log-det, not top-k.** Scoring each candidate alone (its ``log(1 + p(1-p)
z^T A^-1 z)``) and taking the k best picks k copies of the same informative direction:
two near-duplicate pairs score the same, but the second adds almost nothing once the
first is labelled. The greedy rule re-scores every candidate against the information of
the pairs already in the batch (a rank-one update of ``A^-1`` per pick), so a pick
lowers the value of its near-duplicates. The log-det gain is monotone submodular, so

* a candidate's gain only falls as the batch grows, so a stale gain bounds the current
  one, and a *lazy* greedy that re-scores only the candidates whose bound could still
  win makes exactly the greedy choices (see :func:`greedy_logdet`);
* greedy reaches at least 1 - 1/e of the best batch's gain (Nemhauser et al. 1978).

A candidate's gain is kept as ``q = u^T A^-1 u`` with ``u = sqrt(p (1 - p)) z``; after
picks ``u_1..u_t``, Sherman-Morrison gives ``q_t = q_0 - sum_s (u . w_s)^2`` with
``w_s = A_{s-1}^-1 u_s / sqrt(1 + u_s^T A_{s-1}^-1 u_s)``, so re-scoring a stale
candidate costs one dot product per pick it missed.

**The ridge prior.** ``A = lambda I + sum u u^T`` with ``lambda = ridge * mean |u|^2 / F``
over the candidates (F features): a Gaussian prior on the last-layer weights worth one
average candidate's information spread evenly over the F directions (``ridge = 1``). It
keeps ``A`` invertible before a batch spans F directions (a rank-deficient sum has
log-det -inf, and every small batch would tie), and scaling by the candidates' own
information makes the rule independent of the features' units.

An ensemble's members have separate last layers: their joint information is
block-diagonal, its log-det the sum of the members' log-dets, and the gain of a pair is
the sum of the members' gains (still monotone submodular).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from embrm.errors import EmbrmError
from embrm.rm.rules import RULES, check_rule

if TYPE_CHECKING:
    from embrm.rm.trainer import RewardModel

RIDGE = 1.0
# nested tiers of the best candidates for the lazy greedy (see greedy_logdet), and the rows
# of candidates one matrix product handles at a time
TIERS, BLOCK = (512, 4096, 32768), 16384


def item_features(model: RewardModel, x: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features ``(M, N, F)`` of rows ``x`` (standardised first where the model
    was trained on standardised features) and the last layers ``(M, F)``."""
    import torch

    if model.net is None:
        raise EmbrmError(f"dopt needs the last layer of an MLP or linear reward model; a {model.config.method} "
                         "run has none (train a net-based method such as bt or logreg)")
    net = model.net
    device = next(net.parameters()).device
    w = net.last_layer().float().cpu().numpy()
    f = None
    with torch.inference_mode():
        for s in range(0, len(x), chunk):
            xb = np.ascontiguousarray(x[s:s + chunk], dtype=np.float32)
            if model.standardizer is not None:  # the features the net was trained on
                xb = model.standardizer.apply(xb)
            h = net.penultimate(torch.from_numpy(xb).to(device)).float().cpu().numpy()
            if f is None:
                f = np.empty((model.members, len(x), h.shape[2]), np.float32)
            f[:, s:s + chunk] = h
    if f is None:
        f = np.empty((model.members, 0, w.shape[1]), np.float32)
    return f, w


def fisher_vectors(model: RewardModel, x: np.ndarray, a: np.ndarray, b: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``u = sqrt(p (1 - p)) (f_a - f_b)`` per member ``(M, C, F)``, and ``p`` ``(M, C)``.

    A pair's Fisher information about the last layer is ``u u^T``: the BT likelihood
    ``sigmoid(w . (f_a - f_b))`` has Hessian ``p (1 - p) z z^T`` in ``w`` whatever the
    label (checked against autograd in the tests). Features are computed once per
    distinct item.
    """
    items, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    f, w = item_features(model, x[items])
    z = f[:, inv[: len(a)]] - f[:, inv[len(a):]]
    p = 1.0 / (1.0 + np.exp(-np.einsum("mcf,mf->mc", z, w)))
    return (z * np.sqrt(p * (1 - p))[:, :, None]).astype(np.float32), p


def ridge_lambda(u: np.ndarray, ridge: float) -> np.ndarray:
    """Per member: ``ridge * mean |u|^2 / F`` (see the module doc), never 0."""
    lam = ridge * np.einsum("mcf,mcf->m", u, u, dtype=np.float64) / max(u.shape[1], 1) / u.shape[2]
    return np.where(lam > 0, lam, max(ridge, 1e-12))


def information_logdet(u: np.ndarray, lam: np.ndarray, prior: np.ndarray | None = None) -> float:
    """``sum_m log det(lam_m I + prior_m^T prior_m + u_m^T u_m)`` minus the same without ``u``:
    the log-det gain of adding pairs ``u`` (M, k, F) to the information of ``prior``."""
    total = 0.0
    for m in range(u.shape[0]):
        a0 = lam[m] * np.eye(u.shape[2])
        if prior is not None and prior.shape[1]:
            a0 = a0 + prior[m].T.astype(np.float64) @ prior[m]
        a1 = a0 + u[m].T.astype(np.float64) @ u[m]
        total += np.linalg.slogdet(a1)[1] - np.linalg.slogdet(a0)[1]
    return float(total)


def greedy_logdet(u: np.ndarray, k: int, lam: np.ndarray, prior: np.ndarray | None = None,
                  tiers: tuple[int, ...] = TIERS) -> np.ndarray:
    """Indices of ``k`` rows of ``u`` (M, C, F), chosen greedily for the largest log-det of
    ``lam I + prior^T prior + sum u u^T`` (summed over members), by lazy greedy.

    The same choices as plain greedy, which re-scores every candidate after every pick
    (the tests compare the two), at a fraction of the cost. Gains only fall
    (submodularity), so a gain computed some picks ago bounds the current one. The
    candidates sit in nested tiers: the best ``tiers[0]`` by gain, the best ``tiers[1]``,
    ..., and the whole pool. Each tier is exact as of its last catch-up, and its ``tau``
    bounds every candidate outside it:

    * the smallest tier is brought up to date after every pick (one (T, F) product);
    * while its best gain is at least its ``tau``, that candidate is the greedy choice;
    * when it is not, the next tier catches up with the picks it missed (one matrix
      product, compute-bound) and the smaller tier is drawn again from it, and so on up
      to the whole pool, which is never caught up at once: when the widest tier runs dry,
      the pool's candidates catch up in order of their stale gains, a block at a time,
      only until the rest cannot reach the tier (:class:`_Pool`).

    A textbook lazy greedy (a heap re-scoring one stale candidate at a time) is exact too,
    but on 200,000 candidates in 512 dimensions each pick lowers thousands of nearly tied
    gains, and it re-scored most of the pool one by one: minutes instead of seconds.
    """
    m_, c, f = u.shape
    if not 0 < k <= c:
        raise EmbrmError(f"cannot choose {k} pairs from {c} candidates")
    lam = np.asarray(lam, np.float64)
    a0inv = None  # A_0^-1 where the prior holds labelled pairs; else A_0 = lambda I
    if prior is None or not prior.shape[1]:  # q = |u|^2 / lambda
        q = np.einsum("mcf,mcf->mc", u, u, dtype=np.float64) / lam[:, None]
    else:
        q = np.empty((m_, c))
        a0inv = np.empty((m_, f, f))
        for m in range(m_):
            pm = prior[m].astype(np.float64)
            a0inv[m] = np.linalg.inv(lam[m] * np.eye(f) + pm.T @ pm)
            for s in range(0, c, BLOCK):  # u A^-1 u, a block at a time
                us = u[m, s:s + BLOCK].astype(np.float64)
                q[m, s:s + BLOCK] = np.einsum("cf,cf->c", us @ a0inv[m], us)
        np.maximum(q, 0, out=q)
    ws = np.zeros((m_, k, f), np.float32)  # w_s of every pick (float32 halves what each pick reads)
    taken = np.zeros(c, bool)
    levels: list[_Tier] = [_Pool(u, q, ws)]
    taus = [-np.inf]
    for n in sorted({min(n, c) for n in tiers}, reverse=True):  # nested tiers, largest first
        sub, tau = levels[0].draw(n, taken, taus[0], 0)
        levels.insert(0, sub)
        taus.insert(0, tau)
    chosen = np.empty(k, np.int64)
    for t in range(k):
        levels[0].catch_up(ws, t)
        lv = 0
        while levels[lv].gains(taken).max() < taus[lv]:  # not surely the greedy choice: a wider tier
            lv += 1
            levels[lv].catch_up(ws, t)
        for j in range(lv - 1, -1, -1):
            levels[j], taus[j] = levels[j + 1].draw(len(levels[j].idx), taken, taus[j + 1], t)
        top = levels[0]
        pos = int(np.argmax(top.gains(taken)))
        i = int(top.idx[pos])
        chosen[t], taken[i] = i, True
        for m in range(m_):
            # Small products go through einsum's own loop, not BLAS: on a busy 2-core machine
            # a threaded BLAS call on a (1024, 512) matrix took 10-20x longer than one thread.
            ui = top.u[m, pos]
            v = ui / lam[m] if a0inv is None else np.einsum("fg,g->f", a0inv[m], ui.astype(np.float64))
            if t:  # A^-1 u = A_0^-1 u - sum_s w_s (w_s . u)
                v = v - np.einsum("tf,t->f", ws[m, :t], np.einsum("tf,f->t", ws[m, :t], ui))
            ws[m, t] = v / np.sqrt(1.0 + float(ui @ v))
    return chosen


class _Tier:
    """Some candidates (global ``idx``), their ``u`` rows and ``q``, exact as of ``base`` picks."""

    def __init__(self, idx: np.ndarray, u: np.ndarray, q: np.ndarray, base: int):
        self.idx, self.u, self.q, self.base = idx, u, q, base

    def gains(self, taken: np.ndarray) -> np.ndarray:
        return np.where(taken[self.idx], -np.inf, np.log1p(self.q).sum(0))

    def catch_up(self, ws: np.ndarray, t: int) -> None:
        """``q -= sum_s (u . w_s)^2`` over the picks since ``base``: one product a block of rows."""
        if self.base == t:
            return
        for m in range(self.u.shape[0]):
            w = ws[m, self.base:t]
            for s in range(0, len(self.idx), BLOCK):
                ub = self.u[m, s:s + BLOCK]
                if len(w) == 1:  # after each pick: a matrix-vector product, in one thread (see above)
                    proj = np.einsum("cf,f->c", ub, w[0])
                    self.q[m, s:s + BLOCK] -= np.square(proj, dtype=np.float64)
                else:
                    proj = ub @ w.T
                    self.q[m, s:s + BLOCK] -= np.einsum("ct,ct->c", proj, proj, dtype=np.float64)
        np.maximum(self.q, 0, out=self.q)
        self.base = t

    def draw(self, n: int, taken: np.ndarray, tau: float, t: int) -> tuple[_Tier, float]:
        """The ``n`` best of this caught-up tier as a tier of its own, and the bound on
        everything outside the new tier: the best gain left here, or this tier's own bound."""
        g = self.gains(taken)
        part = np.argpartition(-g, n)
        sel = np.sort(part[:n])
        return (_Tier(self.idx[sel], np.ascontiguousarray(self.u[:, sel]), self.q[:, sel], t),
                max(float(g[part[n]]), tau))


class _Pool(_Tier):
    """The whole pool, caught up only as far as a draw for the widest tier needs.

    Its rows are stored once in order of their first gains, best first. A draw brings
    rows up to date from the front, a block at a time, until every row behind is bounded
    (by its stale gain) below the ``n``-th best fresh one; rows behind keep their stale
    gains. So each row's gain is as fresh as the furthest draw that reached it, the rows
    of one block share a few stamps in runs, and every update is a product over
    contiguous rows. Weak pairs in the tail are never re-scored, where a full catch-up
    would cost (candidates x F x picks) each time the widest tier runs dry.
    """

    def __init__(self, u: np.ndarray, q: np.ndarray, ws: np.ndarray):
        order = np.argsort(-np.log1p(q).sum(0), kind="stable")
        super().__init__(order, np.ascontiguousarray(u[:, order]), q[:, order], 0)
        self.ws = ws  # filled in by the greedy loop as it picks
        self.stamp = np.zeros(len(order), np.int64)  # non-increasing along the rows
        self.bound = np.log1p(self.q).sum(0)

    def catch_up(self, ws: np.ndarray, t: int) -> None:
        """Nothing at once: :meth:`draw` catches up what it needs."""

    def _update(self, lo: int, hi: int, t: int) -> None:
        st = self.stamp[lo:hi]
        cuts = [lo, *(lo + 1 + np.flatnonzero(st[1:] != st[:-1])).tolist(), hi]
        for a, b in zip(cuts[:-1], cuts[1:]):  # runs of one stamp
            s0 = int(self.stamp[a])
            if s0 == t:
                continue
            for m in range(self.u.shape[0]):
                proj = self.u[m, a:b] @ self.ws[m, s0:t].T
                self.q[m, a:b] -= np.einsum("ct,ct->c", proj, proj, dtype=np.float64)
        self.q[:, lo:hi] = np.maximum(self.q[:, lo:hi], 0)
        self.stamp[lo:hi] = t
        self.bound[lo:hi] = np.log1p(self.q[:, lo:hi]).sum(0)

    def draw(self, n: int, taken: np.ndarray, tau: float, t: int) -> tuple[_Tier, float]:
        c = len(self.idx)
        live = ~taken[self.idx]
        tail = np.maximum.accumulate(np.where(live, self.bound, -np.inf)[::-1])[::-1]  # best bound from here on
        done, nth = 0, -np.inf
        while done < c and not (done >= n and tail[done] <= nth):
            self._update(done, min(done + BLOCK, c), t)
            done = min(done + BLOCK, c)
            if done >= n:
                g = np.where(live[:done], self.bound[:done], -np.inf)
                nth = float(np.partition(g, done - n)[done - n])
        g = np.where(live[:done], self.bound[:done], -np.inf)
        best = np.argsort(-g, kind="stable")
        sel = np.sort(best[:n])
        rest = max(float(g[best[n:]].max()) if done > n else -np.inf, float(tail[done]) if done < c else -np.inf)
        return (_Tier(self.idx[sel], np.ascontiguousarray(self.u[:, sel]), self.q[:, sel], t), max(rest, tau))


def _pair_codes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lo, hi = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
    return lo * (1 << 32) + hi


def unlabelled(a: np.ndarray, b: np.ndarray, labelled_a: np.ndarray, labelled_b: np.ndarray) -> np.ndarray:
    """Mask of candidates that are not a labelled pair, in either order."""
    if len(labelled_a) == 0:
        return np.ones(len(a), bool)
    return ~np.isin(_pair_codes(a, b), _pair_codes(labelled_a, labelled_b))


def _pair_scores(model: RewardModel, x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each member's score difference ``s(a) - s(b)``, ``(M, C)``, scoring each item once."""
    items, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    s = model.score(x[items])
    return s[:, inv[: len(a)]] - s[:, inv[len(a):]]


def select(rule: str, model: RewardModel | None, x: np.ndarray, a: np.ndarray, b: np.ndarray, k: int,
           labelled_a: np.ndarray | None = None, labelled_b: np.ndarray | None = None, seed: int = 0,
           ridge: float = RIDGE) -> np.ndarray:
    """Indices into the candidates ``(a, b)`` of the batch of ``k`` that ``rule`` picks,
    the most useful first (in random order for ``random``).

    Candidates that are labelled already (``labelled_a``, ``labelled_b``: item indices,
    in either order) are never picked; ``dopt-past`` also counts their information.
    ``model`` may be None for ``random`` only.
    """
    check_rule(rule)
    la = np.asarray(labelled_a if labelled_a is not None else [], np.int64)
    lb = np.asarray(labelled_b if labelled_b is not None else [], np.int64)
    if k < 1:
        raise EmbrmError("the budget must be at least one pair")
    open_ = np.flatnonzero(unlabelled(a, b, la, lb))
    if k > len(open_):
        done = len(a) - len(open_)
        raise EmbrmError(f"a budget of {k} pairs is larger than the pool's {len(open_)} unlabelled candidate pairs"
                         + (f" ({done} more are labelled already)" if done else ""))
    rng = np.random.default_rng(seed)
    if rule == "random":
        return open_[rng.choice(len(open_), k, replace=False)]
    if model is None:
        raise EmbrmError(f"rule {rule} needs a trained reward model")
    pick = open_[rng.permutation(len(open_))]  # ties go to a random candidate, not the first listed
    ca, cb = a[pick], b[pick]
    if rule in ("uncertainty", "disagreement"):
        d = _pair_scores(model, x, ca, cb)
        if rule == "uncertainty":
            key = np.abs(d.mean(0))
        elif d.shape[0] < 2:
            raise EmbrmError("disagreement needs an ensemble: train the reward model with --ensemble 2 or more")
        else:
            key = -d.std(0)
        return pick[np.argsort(key, kind="stable")[:k]]
    u, _ = fisher_vectors(model, x, ca, cb)
    prior = fisher_vectors(model, x, la, lb)[0] if rule == "dopt-past" and len(la) else None
    return pick[greedy_logdet(u, k, ridge_lambda(u, ridge), prior)]


__all__ = ["RIDGE", "RULES", "check_rule", "fisher_vectors", "greedy_logdet", "information_logdet", "item_features",
           "ridge_lambda", "select", "unlabelled"]
