"""Length-sorted, token-budget batches: padding close to zero, order restored later."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


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


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> (ids, attention mask) tensors padded to the longest, on the
    left or the right."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        sl = slice(width - len(s), width) if left else slice(0, len(s))
        ids[r, sl] = torch.tensor(s, dtype=torch.long)
        mask[r, sl] = 1
    return ids, mask
