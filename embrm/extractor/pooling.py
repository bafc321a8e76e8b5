"""Pooling hidden states into one vector per row.

All three poolings work from the attention mask and each row's real-token positions, so
they are correct under left and right padding alike. (The seed paper's code takes
position -1 of a right-padded batch, which for every row but the longest is a pad.)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

POOLINGS = ("last", "mean", "mean-all")


def pool(hidden: torch.Tensor, mask: torch.Tensor, response_start: torch.Tensor, how: str) -> torch.Tensor:
    """(B, T, H) hidden states -> (B, H) float32 vectors.

    ``response_start`` is each row's first response token, counted in real tokens from
    the row's first real token (padding excluded).

    * ``last``: the last real token; defined for every row, an empty response included
      (it is then the state at the end of the prompt).
    * ``mean-all``: the mean over all real tokens, prompt included.
    * ``mean``: the mean over the response's tokens. A row with no response token (an
      empty response, or one truncated away) has no such mean; it falls back to its last
      token, the same vector ``last`` gives, so such rows are embedded, not dropped.
    """
    import torch

    h = hidden.float()
    m = mask.bool()
    real_index = m.long().cumsum(1) - 1  # position among the row's real tokens
    if how == "last":
        last = (real_index.masked_fill(~m, -1)).argmax(1)
        return h[torch.arange(h.shape[0], device=h.device), last]
    if how == "mean-all":
        sel = m
    elif how == "mean":
        sel = m & (real_index >= response_start[:, None])
        empty = ~sel.any(1)
        if empty.any():  # keep the last real token for rows with no response left
            last = (real_index.masked_fill(~m, -1)).argmax(1)
            sel[empty, last[empty]] = True
    else:
        raise ValueError(f"unknown pooling {how!r}")
    w = sel.to(h.dtype)[..., None]
    return (h * w).sum(1) / w.sum(1)
