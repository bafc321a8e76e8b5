"""Point reads: the vectors of a few item keys without scanning the vector table.

A :class:`KeyIndex` maps item key -> row offset of one vector table: the keys as a sorted
fixed-width byte array searched with ``np.searchsorted`` (40 bytes a row with the token
facts, about half a second to build for a million rows). It follows the table's versions:
when a new version only appended fragments (every commit does), only their keys are read
and added as a sorted segment; anything else (compaction, deletion) rebuilds it. The
rows are then read by :func:`embrm.store.scan.read_column_rows`, with the page layouts
this index also keeps (:attr:`KeyIndex.pages`).

A scalar BTREE index in Lance was measured slower than this for more than about ten keys
per query (1,000 keys: 335 ms against 65 ms for a filtered scan, and both far behind a
sorted key array).
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from embrm.store.vectors import key_columns

if TYPE_CHECKING:
    import lance

MAX_SEGMENTS = 8


def _key_bytes(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Item keys as a fixed-width byte array (zero-copy where every key has 32 bytes)."""
    arr = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    arr = arr.cast(pa.string())
    if len(arr) == 0:
        return np.zeros(0, "S32")
    offsets = np.frombuffer(arr.buffers()[1], np.int32, len(arr) + 1, arr.offset * 4)
    if arr.null_count == 0 and np.all(np.diff(offsets) == 32):
        return np.frombuffer(arr.buffers()[2], "S32", len(arr), offsets[0]).copy()
    return np.array([k.encode() for k in arr.to_pylist()], dtype="S64")


class _Segment:
    def __init__(self, keys: np.ndarray, rows: np.ndarray, n_tokens: np.ndarray, truncated: np.ndarray):
        order = np.argsort(keys, kind="stable")
        self.keys, self.rows = keys[order], rows[order]
        self.n_tokens, self.truncated = n_tokens[order], truncated[order]

    def find(self, q: np.ndarray) -> np.ndarray:
        """Index into this segment of each key, -1 where absent."""
        if len(self.keys) == 0:
            return np.full(len(q), -1)
        j = np.minimum(np.searchsorted(self.keys, q), len(self.keys) - 1)
        return np.where(self.keys[j] == q, j, -1)


class KeyIndex:
    """item key -> row offset in one vector table (see the module docstring).

    Use under :attr:`lock`: :meth:`refresh` to the version at hand, then :meth:`lookup`.
    """

    def __init__(self) -> None:
        self.version: int | None = None
        self.fragments: list[tuple[int, int]] = []
        self.rows = 0
        self.segments: list[_Segment] = []
        self.lock = threading.Lock()
        #: page layouts and checked files of the table's data files (see
        #: :func:`embrm.store.scan.read_column_rows`); data files never change once written
        self.pages: dict[Any, Any] = {}

    def refresh(self, ds: lance.LanceDataset) -> None:
        if ds.version == self.version:
            return
        frags = ds.get_fragments()
        now = [(f.metadata.id, f.metadata.physical_rows) for f in frags]
        clean = all(f.metadata.deletion_file is None for f in frags)
        if clean and self.fragments and now[:len(self.fragments)] == self.fragments:
            for f in frags[len(self.fragments):]:
                self._add(key_columns(f))
        else:
            self.rows, self.segments = 0, []
            self._add(key_columns(ds))
        if len(self.segments) > MAX_SEGMENTS:
            self._merge()
        self.version, self.fragments = ds.version, now if clean else []

    def _add(self, t: pa.Table) -> None:
        n = len(t)
        self.segments.append(_Segment(_key_bytes(t.column("item_key")), np.arange(self.rows, self.rows + n),
                                      t.column("n_tokens").to_numpy(),
                                      t.column("truncated").to_numpy(zero_copy_only=False)))
        self.rows += n

    def _merge(self) -> None:
        parts = self.segments
        self.segments = [_Segment(np.concatenate([p.keys for p in parts]), np.concatenate([p.rows for p in parts]),
                                  np.concatenate([p.n_tokens for p in parts]),
                                  np.concatenate([p.truncated for p in parts]))]

    def lookup(self, keys: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row offset or -1, token count, truncation flag) of each key."""
        width = self.segments[0].keys.dtype.itemsize if self.segments else 32
        raw = [k.encode() for k in keys]
        fits = np.array([len(b) <= width for b in raw], bool)  # numpy would cut a longer key to a false match
        q = np.array(raw, dtype=f"S{width}")
        rows = np.full(len(q), -1, np.int64)
        n_tok = np.zeros(len(q), np.int32)
        trunc = np.zeros(len(q), bool)
        for seg in self.segments:
            j = seg.find(q)
            hit = (j >= 0) & (rows < 0) & fits
            rows[hit] = seg.rows[j[hit]]
            n_tok[hit] = seg.n_tokens[j[hit]]
            trunc[hit] = seg.truncated[j[hit]]
        return rows, n_tok, trunc
