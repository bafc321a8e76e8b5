"""Length-sorted, token-budget batches: padding close to zero, order restored later."""
from __future__ import annotations

from typing import Sequence


def token_budget_batches(lengths: Sequence[int], batch_tokens: int, max_batch: int = 512) -> list[list[int]]:
    """Group row indices into batches whose padded size (rows x longest) fits the budget.

    Rows are sorted longest first, so the first batch shows the peak memory at once and
    neighbours in a batch have nearly equal lengths. A row longer than the budget gets a
    batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i in order:
        n = lengths[i]
        width = max(longest, n)
        if cur and (width * (len(cur) + 1) > batch_tokens or len(cur) >= max_batch):
            batches.append(cur)
            cur, width = [], n
        cur.append(i)
        longest = width
    if cur:
        batches.append(cur)
    return batches
