"""Vector tables (``vec_<model hash>``), read side: what a model's table holds, which
keys it has, point reads by key, and reading rows of a vector column.

One vector per (model fingerprint, item key), whichever dataset asked for it. A
:class:`~embrm.store.keyindex.KeyIndex` per table answers "which of these keys are
stored, and where" without a scan; it lives as long as this object, so a long-lived
reader (the service) pays for it once and then only for new fragments.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embrm.errors import EmbrmError
from embrm.store import schema as S
from embrm.store.keyindex import KeyIndex
from embrm.store.keys import short
from embrm.store.scan import read_column_rows
from embrm.store.tables import Tables
from embrm.store.vectors import VectorInfo, key_columns

if TYPE_CHECKING:
    import lance


@dataclass(frozen=True)
class StoredVectors:
    """The result of a point read: which keys were found, and their vectors."""

    keys: list[str]  # as asked, in order
    found: np.ndarray  # (n,) bool
    vectors: dict[int, np.ndarray]  # layer -> (n, dim); rows of keys not found are zero
    n_tokens: np.ndarray  # (n,) int32, 0 where not found
    truncated: np.ndarray  # (n,) bool


class VectorTables:
    """The vector tables of one store (reads; writes are :mod:`embrm.store.vector_writes`)."""

    def __init__(self, tables: Tables, where: str):
        self.tables, self.where = tables, where
        self._indexes: dict[str, KeyIndex] = {}
        self._indexes_lock = threading.Lock()

    def open(self, model_hash: str) -> lance.LanceDataset | None:
        return self.tables.open(S.vector_table(model_hash))

    def get(self, model_hash: str) -> lance.LanceDataset:
        ds = self.open(model_hash)
        if ds is None:
            raise EmbrmError(f"model {short(model_hash)} has no vectors in {self.where}")
        return ds

    def info(self, model_hash: str) -> VectorInfo | None:
        """Dim, dtype and layers of a model's vector table, or None if it has none yet."""
        ds = self.open(model_hash)
        return None if ds is None else VectorInfo.of_schema(ds.schema)

    def index(self, model_hash: str) -> KeyIndex:
        """The point-read index of a model's table, kept for the life of this object."""
        with self._indexes_lock:
            return self._indexes.setdefault(model_hash, KeyIndex())

    def keys(self, model_hash: str, columns: tuple[str, ...] = ()) -> pa.Table:
        """The one scan of a vector table's keys (plus small ``columns``), in table order."""
        ds = self.open(model_hash)
        cols = ["item_key", *columns]
        if ds is None:
            return S.vector_schema(1, "float32", (-1,)).empty_table().select(cols)
        return key_columns(ds, cols)

    def cached(self, model_hash: str) -> pa.Array:
        """Every item key that has a vector under this model fingerprint."""
        return self.keys(model_hash).column("item_key").combine_chunks()

    def missing(self, model_hash: str, keys: pa.Array | pa.ChunkedArray | list[str]) -> pa.Array:
        """The distinct ``keys`` that have no vector under this model, in first-seen order."""
        arr = keys if isinstance(keys, (pa.Array, pa.ChunkedArray)) else pa.array(keys, pa.string())
        uniq = pc.unique(arr)
        if isinstance(uniq, pa.ChunkedArray):
            uniq = uniq.combine_chunks()
        have = self.cached(model_hash)
        if len(have) == 0:
            return uniq
        return uniq.filter(pc.invert(pc.is_in(uniq, value_set=have)))

    def stored(self, model_hash: str, ds: lance.LanceDataset, keys: list[str]) -> np.ndarray:
        """Which ``keys`` table version ``ds`` stores, by the key index (which reads only the
        fragments added since it last looked, so a commit's check costs its own keys)."""
        index = self.index(model_hash)
        with index.lock:
            index.refresh(ds)
            return index.lookup(keys)[0] >= 0

    def read_rows(self, model_hash: str, ds: lance.LanceDataset, layer: int, dim: int, dtype: str,
                  rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (table offsets of version ``ds``) of one layer's column."""
        return read_column_rows(ds, S.layer_column(layer), dim, dtype, rows, self.index(model_hash).pages,
                                direct=self.tables.direct_reads)

    def point_read(self, model_hash: str, keys: list[str], layers: Iterable[int] | None = None) -> StoredVectors:
        """The stored vectors of ``keys`` (one layer or several), without a scan of the
        whole table. Keys without a vector come back with ``found`` False."""
        ds = self.get(model_hash)
        info = VectorInfo.of_schema(ds.schema)
        want = tuple(info.layers if layers is None else layers)
        bad = [layer for layer in want if layer not in info.layers]
        if bad:
            raise EmbrmError(f"layer(s) {bad} were not extracted; stored layers: {list(info.layers)}")
        index = self.index(model_hash)
        with index.lock:
            index.refresh(ds)
            rows, n_tok, trunc = index.lookup(list(keys))
        found = rows >= 0
        np_dtype = np.float16 if info.dtype == "float16" else np.float32
        out = {}
        for layer in want:
            v = np.zeros((len(keys), info.dim), np_dtype)
            if found.any():
                v[found] = self.read_rows(model_hash, ds, layer, info.dim, info.dtype, rows[found])
            out[layer] = v
        return StoredVectors(list(keys), found, out, n_tok, trunc)
