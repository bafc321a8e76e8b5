"""The cold read: one layer column of a vector table into one preallocated array.

Each FixedSizeList batch is viewed as its flat float buffer and copied (or scattered,
when the table's order differs from the wanted order) straight into the output, so no
Python object is made per row.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import lance

READ_BATCH = 65536


def scan_vectors(ds: lance.LanceDataset, column: str, dim: int, dtype: str, src: np.ndarray) -> np.ndarray:
    """Rows ``src`` (table row offsets, in the wanted order) of ``column`` as ``(len(src), dim)``."""
    np_dtype = np.float16 if dtype == "float16" else np.float32
    n = len(src)
    out = np.empty((n, dim), dtype=np_dtype)
    if n == ds.count_rows() and np.array_equal(src, np.arange(n)):
        at = 0  # the table holds exactly these rows, in order: copy batches straight in
        for batch in ds.to_batches(columns=[column], batch_size=READ_BATCH):
            block = _block(batch, dim)
            out[at:at + len(block)] = block
            at += len(block)
        return out
    order = np.argsort(src, kind="stable")  # general case: scatter each batch where it is wanted
    sorted_src = src[order]
    start = 0
    for batch in ds.to_batches(columns=[column], batch_size=READ_BATCH):
        block = _block(batch, dim)
        lo, hi = np.searchsorted(sorted_src, [start, start + len(block)])
        if hi > lo:
            out[order[lo:hi]] = block[sorted_src[lo:hi] - start]
        start += len(block)
    return out


def _block(batch: object, dim: int) -> np.ndarray:
    flat = batch.column(0).flatten().to_numpy(zero_copy_only=True)  # type: ignore[attr-defined]
    return flat.reshape(-1, dim)
