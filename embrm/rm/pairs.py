"""Preference pairs from multi-response data, simulated annotators, and prompt splits.

Follows the seed paper's protocol: pairs within a prompt (or across prompts), a number
of pairs per prompt, a diversity rule for which two responses are compared, and an
annotator who prefers i over j with probability sigmoid(beta * (r_i - r_j) / s).
Everything takes a seed and is reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embrm.errors import EmbrmError

DIVERSITY = ("random", "adjacent", "extreme")


@dataclass
class Pairs:
    """Pairs of flat item indices (into a ``(prompts * K)`` array) and labels.

    ``y[i] = 1`` means item ``a[i]`` won. ``prompt`` is the prompt of ``a`` (the prompt
    a pair belongs to, for splits); ``prompt_b`` is the prompt of ``b`` where a pair may
    compare responses to two different prompts (None: the same as ``prompt``).
    """

    a: np.ndarray
    b: np.ndarray
    y: np.ndarray
    prompt: np.ndarray
    prompt_b: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.a)

    def subset(self, mask: np.ndarray) -> Pairs:
        return Pairs(self.a[mask], self.b[mask], self.y[mask], self.prompt[mask],
                     None if self.prompt_b is None else self.prompt_b[mask])

    def swapped(self, mask: np.ndarray) -> Pairs:
        """The same pairs with ``a`` and ``b`` (their prompts and the label) swapped where ``mask``."""
        pb = self.prompt if self.prompt_b is None else self.prompt_b
        return Pairs(np.where(mask, self.b, self.a), np.where(mask, self.a, self.b),
                     np.where(mask, 1 - self.y, self.y), np.where(mask, pb, self.prompt),
                     None if self.prompt_b is None else np.where(mask, self.prompt, pb))

    def among(self, prompts: np.ndarray, held_out: bool = False) -> np.ndarray:
        """Mask of the pairs that belong to a split of ``prompts``.

        A pair belongs to each of its prompts' groups. For training (``held_out=False``)
        both its prompts must be among ``prompts``; for held-out prompts, either one. So
        a cross-prompt pair with one held-out prompt is never trained on (nothing of a
        held-out prompt is), and it is evaluated, where its other response belongs to a
        training prompt. With one prompt per pair both rules are the same.
        """
        a = np.isin(self.prompt, prompts)
        if self.prompt_b is None:
            return a
        b = np.isin(self.prompt_b, prompts)
        return a | b if held_out else a & b


def split_prompts(n_prompts: int, val_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (train, validation) prompt ids, so no prompt leaks across."""
    if not 0 < val_frac < 1:
        raise EmbrmError(f"validation fraction {val_frac} must be between 0 and 1")
    perm = np.random.default_rng(seed).permutation(n_prompts)
    n_val = max(1, int(round(n_prompts * val_frac)))
    if n_val >= n_prompts:
        raise EmbrmError(f"{n_prompts} prompts are too few to split off a validation set")
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def make_pairs(rewards: np.ndarray, prompts: np.ndarray, pairs_per_prompt: int = 1, mode: str = "within",
               diversity: str = "random", seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Choose pairs (flat indices a, b) among ``prompts`` of a ``(P, K)`` reward array.

    * ``within``: both responses from the same prompt; ``diversity`` picks random 2 of K,
      two adjacent golden ranks, or the extreme ranks (best vs worst, then 2nd vs
      2nd-worst, ...).
    * ``cross``: one response of prompt i against one of a random other prompt (as the
      seed paper's cross-prompt setting), random responses.
    """
    if diversity not in DIVERSITY:
        raise EmbrmError(f"unknown diversity {diversity!r}; use one of {', '.join(DIVERSITY)}")
    if mode not in ("within", "cross"):
        raise EmbrmError(f"unknown pair mode {mode!r}; use within or cross")
    p_all, k = rewards.shape
    if k < 2 and mode == "within":
        raise EmbrmError("within-prompt pairs need at least 2 responses per prompt")
    rng = np.random.default_rng(seed)
    n = len(prompts) * pairs_per_prompt
    pid = np.repeat(prompts, pairs_per_prompt)
    if mode == "cross":
        if len(prompts) < 2:
            raise EmbrmError("cross-prompt pairs need at least 2 prompts")
        other = prompts[rng.integers(0, len(prompts), n)]
        clash = other == pid  # redraw the few that hit their own prompt
        while clash.any():
            other[clash] = prompts[rng.integers(0, len(prompts), clash.sum())]
            clash = other == pid
        i = rng.integers(0, k, n)
        j = rng.integers(0, k, n)
        return pid * k + i, other * k + j, pid
    if diversity == "random":
        i = rng.integers(0, k, n)
        j = (i + rng.integers(1, k, n)) % k  # a different response of the same prompt
    else:
        order = np.argsort(-rewards[pid], axis=1, kind="stable")  # golden ranks, best first
        rep = np.tile(np.arange(pairs_per_prompt), len(prompts))
        if diversity == "adjacent":
            start = rng.integers(0, k - 1, n)
            ri, rj = start, start + 1
        else:
            t = rep % (k // 2)
            ri, rj = t, k - 1 - t
        rows = np.arange(n)
        i, j = order[rows, ri], order[rows, rj]
    swap = rng.random(n) < 0.5  # random presentation order
    i, j = np.where(swap, j, i), np.where(swap, i, j)
    return pid * k + i, pid * k + j, pid


def annotate(r_a: np.ndarray, r_b: np.ndarray, beta: float, scale: float | None = None, seed: int = 0) -> np.ndarray:
    """Simulated annotator: label 1 ("a wins") with probability sigmoid(beta (r_a - r_b) / s).

    ``beta < 0`` means a perfect annotator (ties broken at random). ``scale`` defaults to
    the standard deviation of the rewards involved.
    """
    rng = np.random.default_rng(seed)
    d = np.asarray(r_a, float) - np.asarray(r_b, float)
    if not np.isfinite(d).all():
        raise EmbrmError("rewards contain NaN or inf; every response needs a finite golden reward")
    if beta < 0:
        tie = d == 0
        return np.where(tie, rng.random(len(d)) < 0.5, d > 0).astype(np.float32)
    s = scale if scale is not None else float(np.std(np.concatenate([r_a, r_b]))) or 1.0
    p = 1.0 / (1.0 + np.exp(-beta * d / s))
    return (rng.random(len(d)) < p).astype(np.float32)


def build_pairs(rewards: np.ndarray, prompts: np.ndarray, pairs_per_prompt: int, mode: str, diversity: str,
                beta: float, scale: float | None, seed: int) -> Pairs:
    """Pairs with simulated labels for the given prompts."""
    a, b, pid = make_pairs(rewards, prompts, pairs_per_prompt, mode, diversity, seed)
    flat = rewards.reshape(-1)
    s = scale if scale is not None else float(np.nanstd(rewards)) or 1.0
    y = annotate(flat[a], flat[b], beta, s, seed + 1)
    return Pairs(a, b, y, pid)
