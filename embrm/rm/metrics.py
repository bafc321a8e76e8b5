"""Ensemble aggregation and evaluation metrics, all vectorised over prompts.

Best-of-N uses the exact unbiased estimator over all N-subsets of K responses instead of
the seed paper's 100 random repeats: with responses sorted by proxy score ascending,
the i-th is the pick of a random N-subset with probability C(i-1, N-1) / C(K, N), so

    E[gold of best-of-N] = sum_i C(i-1, N-1) / C(K, N) * gold_(i).

The weights are computed in log space (K = 500, N = 300 overflows otherwise).
"""
from __future__ import annotations

import numpy as np
from scipy.special import gammaln
from scipy.stats import kendalltau, rankdata

from embrm.errors import EmbrmError

AGGREGATIONS = ("mean", "min", "single", "mean-var", "mean-std")
#: The finite range of the coefficient of mean-var (lambda) and mean-std (beta): how many
#: variances (standard deviations) of the members' disagreement a reward loses. Within
#: it, a reward of finite member scores only overflows where the scores themselves are
#: near float32's limit, and that is refused item by item (:func:`finite_rewards`).
COEF_RANGE = (0.0, 1e6)
COEF_NAME = {"mean-var": "lambda", "mean-std": "beta"}
F32_MAX = float(np.finfo(np.float32).max)
DEFAULT_BON = (1, 2, 5, 10, 30, 50, 100, 300, 500)


def aggregate(scores: np.ndarray, how: str, coef: float = 1.0) -> np.ndarray:
    """Combine member scores ``(M, ...)`` into one: mean, min (worst case), single (first
    member), mean - coef*var (uncertainty-weighted, Coste et al. 2023) or mean - coef*std
    (a lower confidence bound). ``coef`` must lie in :data:`COEF_RANGE`."""
    check_coef(how, coef)
    if how == "mean":
        return scores.mean(0)
    if how == "min":
        return scores.min(0)
    if how == "single":
        return scores[0]
    if how == "mean-var":
        return scores.mean(0) - coef * scores.var(0)
    if how == "mean-std":
        return scores.mean(0) - coef * scores.std(0)
    raise EmbrmError(f"unknown aggregation {how!r}; use one of {', '.join(AGGREGATIONS)}")


def check_coef(how: str, coef: float) -> None:
    """Refuse a mean-var / mean-std coefficient outside :data:`COEF_RANGE`, by its name."""
    lo, hi = COEF_RANGE
    if how in COEF_NAME and not (np.isfinite(coef) and lo <= coef <= hi):
        raise EmbrmError(f"{COEF_NAME[how]} of {how} is {coef:g}; use a finite number from {lo:g} to {hi:g}")


def finite_rewards(scores: np.ndarray, how: str, coef: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(aggregated reward, members' std) of ``(members, items)`` scores, in float64, each
    within float32's range, or an :class:`EmbrmError` naming the first item that is not
    (and the coefficient, where it is the cause). A reward is finite or refused, never
    NaN, inf or null."""
    check_coef(how, coef)
    s = np.asarray(scores, np.float64)
    bad = ~np.isfinite(s).all(0)
    if bad.any():
        i = int(np.argmax(bad))
        raise EmbrmError(f"item {i}: the reward model's members score it {s[:, i][~np.isfinite(s[:, i])][0]}, not "
                         "a finite number (its weights overflow on this input)")
    with np.errstate(over="ignore", invalid="ignore"):
        reward, std = aggregate(s, how, coef), s.std(0)
    bad = ~(np.isfinite(reward) & (np.abs(reward) <= F32_MAX) & np.isfinite(std) & (std <= F32_MAX))
    if bad.any():
        i = int(np.argmax(bad))
        why = f" with {COEF_NAME[how]} {coef:g}; use a smaller {COEF_NAME[how]}" if how in COEF_NAME else ""
        raise EmbrmError(f"item {i}: the {how} reward overflows float32 (member scores up to "
                         f"{np.abs(s[:, i]).max():.3g}){why}")
    return reward, std


def bon_weights(k: int, ns: list[int]) -> np.ndarray:
    """``(len(ns), K)``: weight of the i-th lowest proxy score being the best-of-N pick."""
    i = np.arange(1, k + 1)
    out = np.zeros((len(ns), k))
    for r, n in enumerate(ns):
        ok = i >= n
        log_choose = gammaln(i[ok]) - gammaln(n) - gammaln(i[ok] - n + 1)  # log C(i-1, N-1)
        logw = log_choose - (gammaln(k + 1) - gammaln(n + 1) - gammaln(k - n + 1))
        out[r, ok] = np.exp(logw)
    return out


def check_bon(proxy: np.ndarray, gold: np.ndarray, ns: list[int]) -> None:
    if proxy.shape[-2:] != gold.shape:
        raise EmbrmError(f"proxy scores {proxy.shape} and golden rewards {gold.shape} do not line up")
    k = gold.shape[1]
    if k < 2:
        raise EmbrmError("Best-of-N needs at least 2 responses per prompt")
    big = [n for n in ns if n > k]
    if big:
        raise EmbrmError(f"N={big[0]} is larger than the {k} responses per prompt; use N <= {k}")
    if any(n < 1 for n in ns):
        raise EmbrmError("every N must be at least 1")
    if not (np.isfinite(proxy).all() and np.isfinite(gold).all()):
        raise EmbrmError("scores or golden rewards contain NaN or inf")


def best_of_n(proxy: np.ndarray, gold: np.ndarray, ns: list[int]) -> np.ndarray:
    """Expected golden reward of the best-of-N pick by proxy score, per prompt.

    ``proxy``: (P, K) or (M, P, K) (one set of scores per member or aggregation);
    ``gold``: (P, K). Returns (..., P, len(ns)).
    """
    ns = list(ns)
    check_bon(proxy, gold, ns)
    order = np.argsort(proxy, axis=-1, kind="stable")
    g = np.broadcast_to(gold, proxy.shape)
    sorted_gold = np.take_along_axis(g, order, axis=-1)
    return sorted_gold @ bon_weights(gold.shape[1], ns).T


def bon_quantile(proxy: np.ndarray, gold: np.ndarray, ns: list[int]) -> np.ndarray:
    """Expected quantile (0 worst, 1 best) of the best-of-N pick among its prompt's responses."""
    q = (rankdata(gold, axis=-1) - 1) / (gold.shape[-1] - 1)
    return best_of_n(proxy, q, ns)


def spearman_per_prompt(proxy: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Spearman correlation per prompt (NaN where either side is constant)."""
    a = rankdata(proxy, axis=-1)
    b = rankdata(gold, axis=-1)
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(-1) / np.where(den > 0, den, 1), np.nan)


def kendall_per_prompt(proxy: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Kendall tau-b per prompt (NaN where undefined)."""
    return np.array([kendalltau(p, g).statistic for p, g in zip(proxy, gold)], dtype=float)


def pairwise_accuracy(score_a: np.ndarray, score_b: np.ndarray, y: np.ndarray) -> float:
    """Fraction of pairs whose higher-scored item is the labelled winner (ties count 1/2).

    NaN for no pairs (e.g. held-out prompts whose golden rewards all tie), like the other
    undefined metrics, so tables show it as missing rather than as a number.
    """
    if len(y) == 0:
        return float("nan")
    pred = np.sign(score_a - score_b)
    truth = np.where(y > 0.5, 1.0, -1.0)
    return float(np.mean(np.where(pred == 0, 0.5, pred == truth)))


def binned_calibration(p: np.ndarray, y: np.ndarray, bins: int = 10
                       ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Expected calibration error of probabilities ``p`` against 0/1 labels ``y`` in equal-width
    bins, plus per-bin confidence, frequency and counts for a reliability plot."""
    p, y = np.asarray(p, float), np.asarray(y, float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    conf = np.bincount(which, p, bins)
    acc = np.bincount(which, y, bins)
    cnt = np.bincount(which, minlength=bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf, acc = conf / cnt, acc / cnt
    ece = float(np.nansum(np.abs(conf - acc) * cnt) / max(cnt.sum(), 1))
    return ece, conf, acc, cnt


def expected_calibration_error(score_a: np.ndarray, score_b: np.ndarray, y: np.ndarray, bins: int = 10
                               ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """ECE of the Bradley-Terry probability sigmoid(s_a - s_b) that ``a`` is preferred.

    Every pair is counted in both orders: (a, b) with label y and (b, a) with 1 - y. Pairs
    are usually stored winner first, and with one order only the labels are all 1, so ECE
    would reduce to 1 - mean p(winner): about 0.5 for any model near chance. Both orders
    make the measure independent of how pairs happen to be presented, and the reliability
    plot (the bins of :func:`binned_calibration`) shows the same numbers.
    """
    d = np.asarray(score_a, float) - np.asarray(score_b, float)
    y = np.asarray(y, float)
    p = 1 / (1 + np.exp(-np.concatenate([d, -d])))
    return binned_calibration(p, np.concatenate([y, 1 - y]), bins)


def mean_interval(values: np.ndarray) -> tuple[float, float]:
    """Mean of the finite values and the half-width of its 95% t-interval (0 for one value):
    with a handful of seeds, a normal interval would be too narrow."""
    from scipy.stats import t

    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    if len(v) == 1:
        return float(v[0]), 0.0
    return float(v.mean()), float(t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, float)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def bootstrap_interval(values: np.ndarray, reps: int = 2000, seed: int = 0, level: float = 0.95
                       ) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one per held-out unit).

    For a paired comparison pass the per-unit differences of two models on the same units:
    the interval then excludes the spread that both share (hard and easy units).
    """
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    means = v[np.random.default_rng(seed).integers(0, len(v), (reps, len(v)))].mean(1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))
