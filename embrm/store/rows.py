"""Datasets' rows tables (``ds_<dataset hash>``): every row in order, with its item key,
structure (prompt id, response index, role), labels and texts.

A dataset is written once, in chunks, keyed by position, so re-running after a crash
or alongside another writer of the same dataset is safe. Rows are read back in dataset
(position) order, whole or a batch at a time.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from embrm.errors import EmbrmError
from embrm.store import schema as S
from embrm.store.keys import short
from embrm.store.tables import Tables, merge

if TYPE_CHECKING:
    import lance

ROW_CHUNK = 20_000
HASH_KEY, KIND_KEY = b"embrm.dataset_hash", b"embrm.kind"  # schema metadata of a rows table


class DatasetRows:
    """The rows tables of one store."""

    def __init__(self, tables: Tables, where: str):
        self.tables, self.where = tables, where

    def has(self, dataset_hash: str, n_rows: int | None = None) -> bool:
        """Whether the dataset's rows table exists (and holds ``n_rows`` rows)."""
        ds = self.tables.open(S.dataset_table(dataset_hash))
        return ds is not None and (n_rows is None or ds.count_rows() == n_rows)

    def write(self, dataset_hash: str, rows: Iterable[dict[str, Any]] | Iterable[pa.RecordBatch], n_rows: int,
              kind: str | None = None) -> None:
        """Write the dataset's rows table, in chunks, idempotently (keyed by position).

        ``rows`` are dicts of the row schema or Arrow record batches of it. ``merge_insert``
        on ``position`` skips rows already there, so a re-run or a second writer is safe.
        The table's schema records the full dataset hash (its name holds only a prefix)
        and its kind, so a request naming the dataset can be checked against both.
        """
        if self.has(dataset_hash, n_rows):
            return
        name = S.dataset_table(dataset_hash)
        meta = {HASH_KEY: dataset_hash.encode()} | ({KIND_KEY: kind.encode()} if kind else {})
        self.tables.create(name, S.ROW_SCHEMA.with_metadata(meta))
        for data in _row_chunks(rows, ROW_CHUNK):
            with self.tables.lock(name):
                merge(self.tables.get(name), "position", data)  # the latest version, under the lock
        got = self.tables.get(name).count_rows()
        if got != n_rows:
            raise EmbrmError(
                f"dataset {short(dataset_hash)} has {got} stored rows but {n_rows} were expected; "
                "the dataset changed while it was read: re-run the command"
            )

    def table(self, dataset_hash: str, version: int | None = None) -> lance.LanceDataset:
        ds = self.tables.open(S.dataset_table(dataset_hash), version)
        if ds is None:
            raise EmbrmError(f"dataset {short(dataset_hash)} has no rows in {self.where}")
        return ds

    def recorded(self, dataset_hash: str) -> tuple[str | None, str | None] | None:
        """(full hash, kind) recorded with the dataset's rows table (None for what a table
        written by an older embrm lacks), or None if no such table exists."""
        ds = self.tables.open(S.dataset_table(dataset_hash))
        if ds is None:
            return None
        meta = ds.schema.metadata or {}
        return (meta[HASH_KEY].decode() if HASH_KEY in meta else None,
                meta[KIND_KEY].decode() if KIND_KEY in meta else None)

    def version(self, dataset_hash: str) -> int:
        return self.table(dataset_hash).version

    def iter(self, dataset_hash: str, columns: list[str] | None = None, batch_size: int = 4096, offset: int = 0,
             limit: int | None = None) -> Iterator[pa.RecordBatch]:
        """The dataset's rows in position (dataset) order, ``batch_size`` at a time;
        ``offset``/``limit`` select a range of that order (a resumed pull).

        Memory is bounded by the batch and one int64 per row (the positions, read once
        to check the stored order; rows written by one writer are already in order).
        """
        ds = self.table(dataset_hash)
        cols = None if columns is None else list(dict.fromkeys(["position", *columns]))
        pos = ds.to_table(columns=["position"]).column("position").to_numpy()
        end = len(pos) if limit is None else min(len(pos), offset + limit)
        if offset >= end:
            return
        if len(pos) < 2 or bool(np.all(pos[1:] > pos[:-1])):
            yield from ds.to_batches(columns=cols, batch_size=batch_size, offset=offset, limit=end - offset)
            return
        order = np.argsort(pos, kind="stable")[offset:end]
        for s in range(0, len(order), batch_size):
            yield from ds.take(order[s:s + batch_size], columns=cols).to_batches()

    def read(self, dataset_hash: str, columns: list[str] | None = None) -> pa.Table:
        """The dataset's rows in order, as one table."""
        ds = self.table(dataset_hash)
        cols = None if columns is None else list(dict.fromkeys(["position", *columns]))
        t = ds.to_table(columns=cols)
        pos = t.column("position").to_numpy()
        if len(pos) > 1 and not np.all(pos[1:] > pos[:-1]):
            t = t.take(pa.array(np.argsort(pos, kind="stable")))
        return t

    def keys(self, dataset_hash: str) -> pa.ChunkedArray:
        """Every row's item key, in dataset order."""
        return self.read(dataset_hash, ["item_key"]).column("item_key")

    # ------------------------------------------------- distributed readers
    def take(self, dataset_hash: str, offsets: np.ndarray, columns: list[str], version: int | None = None
             ) -> pa.Table:
        """Rows by their offsets in the rows table (as :meth:`physical_keys` gives them):
        how a worker reads the items a driver sent it, without the texts travelling
        through the driver."""
        return self.table(dataset_hash, version).take(np.asarray(offsets, dtype=np.int64), columns=columns)

    def physical_keys(self, dataset_hash: str, batch_size: int = 65536) -> Iterator[tuple[int, pa.Array]]:
        """(first offset, item keys) of the rows table in its stored order, a batch at a time."""
        at = 0
        for b in self.table(dataset_hash).to_batches(columns=["item_key"], batch_size=batch_size):
            yield at, b.column(0)
            at += len(b)


def row_batches(rows: Iterable[dict[str, Any]], n: int = ROW_CHUNK) -> Iterator[pa.RecordBatch]:
    """Dict rows of the row schema -> record batches of at most ``n`` rows (what
    :meth:`~embrm.store.base.Store.write_rows` takes)."""
    for t in _row_chunks(rows, n):
        yield from t.to_batches()


def _row_chunks(rows: Iterable[dict[str, Any]] | Iterable[pa.RecordBatch], n: int) -> Iterator[pa.Table]:
    """Dict rows or record batches -> tables of the row schema of at most ``n`` rows."""
    buf: list[dict[str, Any]] = []
    for r in rows:
        if isinstance(r, (pa.RecordBatch, pa.Table)):
            t = pa.Table.from_batches([r]) if isinstance(r, pa.RecordBatch) else r
            t = t.select(S.ROW_SCHEMA.names).cast(S.ROW_SCHEMA)
            for s in range(0, len(t), n):
                yield t.slice(s, n)
            continue
        buf.append(r)
        if len(buf) == n:
            yield pa.Table.from_pylist(buf, schema=S.ROW_SCHEMA)
            buf = []
    if buf:
        yield pa.Table.from_pylist(buf, schema=S.ROW_SCHEMA)
