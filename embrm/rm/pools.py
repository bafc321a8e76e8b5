"""Candidate pools for active reward modeling: which pairs a selection rule may choose from.

* **Within-prompt** pairs: two responses to the same prompt, every such pair of the
  prompts drawn (or a sample of ``n`` of them).
* **Cross-prompt** pairs: two responses to two different prompts, ``n`` drawn at random.
  An annotator can still say which response is better, and the comparison tells the
  reward model about the reward's scale across prompts, which within-prompt pairs never
  do (the active-RM paper reports that cross-prompt pairs label more efficiently).
* **Pairwise entries** give a fixed pool: one candidate per stored pair. Its stored
  order (chosen first) is a label, so the pool shows each pair in a random order, and a
  rule sees both orders alike (its scores are symmetric in ``a`` and ``b``).

Pools are item-index pairs ``(a, b)`` into the entry's vectors; nothing here reads a store.
"""
from __future__ import annotations

import numpy as np

from embrm.errors import EmbrmError

MODES = ("within", "cross")


def _groups(item_prompt: np.ndarray, prompts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items of ``prompts`` sorted by prompt: (items, the start of each prompt's run, its length)."""
    items = np.flatnonzero(np.isin(item_prompt, prompts))
    items = items[np.argsort(item_prompt[items], kind="stable")]
    _, starts, counts = np.unique(item_prompt[items], return_index=True, return_counts=True)
    return items, starts, counts


def within_pairs(item_prompt: np.ndarray, prompts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of two different items of one prompt, for each of ``prompts``."""
    items, starts, counts = _groups(item_prompt, prompts)
    a, b = [], []
    for size in np.unique(counts):  # prompts with the same number of responses together
        i, j = np.triu_indices(int(size), 1)
        first = starts[counts == size][:, None]
        a.append((first + i).ravel())
        b.append((first + j).ravel())
    if not a:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return items[np.concatenate(a)], items[np.concatenate(b)]


def cross_pairs(item_prompt: np.ndarray, prompts: np.ndarray, n: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` distinct pairs of items of two different prompts among ``prompts`` (all of them
    when there are no more than ``n``)."""
    items = np.flatnonzero(np.isin(item_prompt, prompts))
    pid = item_prompt[items]
    _, counts = np.unique(pid, return_counts=True)
    if len(counts) < 2:
        raise EmbrmError("cross-prompt pairs need at least 2 prompts")
    total = (len(items) * (len(items) - 1) - int((counts * (counts - 1)).sum())) // 2
    if total <= n:
        i, j = np.triu_indices(len(items), 1)
        keep = pid[i] != pid[j]
        return items[i[keep]], items[j[keep]]
    codes = np.empty(0, np.int64)
    while len(codes) < n:  # draw, drop same-prompt and repeated pairs, draw the shortfall again
        m = 2 * (n - len(codes)) + 16
        i, j = rng.integers(0, len(items), m), rng.integers(0, len(items), m)
        ok = pid[i] != pid[j]
        new = np.minimum(i, j)[ok] * len(items) + np.maximum(i, j)[ok]
        codes = np.concatenate([codes, new[~np.isin(new, codes)]])
        codes = codes[np.sort(np.unique(codes, return_index=True)[1])]  # first occurrences, in draw order
    codes = codes[:n]
    a, b = items[codes // len(items)], items[codes % len(items)]
    swap = rng.random(n) < 0.5
    return np.where(swap, b, a), np.where(swap, a, b)


def candidate_pool(item_prompt: np.ndarray, prompts: np.ndarray, mode: str, n: int | None,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Candidates among the items of ``prompts``: all within-prompt pairs (``n`` of them at
    random when ``n`` is smaller), or ``n`` cross-prompt pairs."""
    if mode not in MODES:
        raise EmbrmError(f"unknown pair mode {mode!r}; use within or cross")
    if mode == "cross":
        if not n:
            raise EmbrmError("cross-prompt candidates need a number to draw (--candidates)")
        return cross_pairs(item_prompt, prompts, n, rng)
    a, b = within_pairs(item_prompt, prompts)
    if not len(a):
        raise EmbrmError("within-prompt pairs need a prompt with at least 2 responses")
    if n and n < len(a):
        keep = np.sort(rng.choice(len(a), n, replace=False))
        a, b = a[keep], b[keep]
    swap = rng.random(len(a)) < 0.5  # no rule may learn from which response is listed first
    return np.where(swap, b, a), np.where(swap, a, b)


def stored_pairs(chosen: np.ndarray, rejected: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A pairwise entry's fixed pool: each stored pair once, in a random order, and the
    hidden label (1 where ``a`` is the chosen response), revealed only when selected."""
    swap = rng.random(len(chosen)) < 0.5
    return np.where(swap, rejected, chosen), np.where(swap, chosen, rejected), (~swap).astype(np.float32)


__all__ = ["MODES", "candidate_pool", "cross_pairs", "stored_pairs", "within_pairs"]
