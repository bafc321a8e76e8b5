"""The embedding store: catalog, datasets' rows, content-addressed vectors, entries.

Reading whole entries (``load``, ``iter_entry``) lives in :mod:`embrm.store.loader`,
export in :mod:`embrm.store.export`; this module owns the tables and their invariants:

* every write is a Lance commit (atomic: a crash leaves the table at the previous
  version), done in chunks so a crash loses at most one chunk of work;
* no item key is ever stored twice, whoever writes it: a re-run, a resume, a second
  process. On a local disk new vectors are appended under the table's commit lock
  (:mod:`embrm.store.locks`) after a check against the table's key index; on object
  storage they go through ``merge_insert`` on the item key, which Lance checks against
  concurrent writers because the key field carries its primary-key marker;
* an entry is ``complete`` only when every row of its dataset has a vector.

The seams every front end uses (the CLI's extraction loop, the service, the Ray
engine): :meth:`Store.missing_keys`, :meth:`Store.get_vectors`,
:func:`~embrm.store.vectors.build_vector_table` + :meth:`Store.commit_vectors`,
:meth:`Store.iter_dataset_rows`, :meth:`Store.begin_entry` / :meth:`Store.finish_entry`
and :meth:`Store.iter_entry`.
"""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embrm import __version__
from embrm.errors import EmbrmError
from embrm.store import schema as S
from embrm.store.cache import LoadCache
from embrm.store.keys import short
from embrm.store.locks import commit_lock
from embrm.store.tables import Tables, is_remote, local_path, retry
from embrm.store.vectors import VectorInfo, build_vector_table, key_columns

if TYPE_CHECKING:
    import lance

    from embrm.store.loader import Embeddings, EntryBatch

DEFAULT_STORE = "./embrm-store"
ROW_CHUNK = 20_000
COMPACT_AFTER = 8  # fragments a vector table may have before finishing an entry compacts it


def default_store_uri() -> str:
    return os.environ.get("EMBRM_STORE") or DEFAULT_STORE


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


@dataclass(frozen=True)
class Entry:
    """One (model, dataset) entry of the catalog."""

    model_hash: str
    model_name: str
    model_config: dict[str, Any]
    dataset_hash: str
    dataset_name: str
    dataset_source: dict[str, Any]
    kind: str
    n_rows: int
    rows: int
    dim: int
    dtype: str
    layers: tuple[int, ...]
    status: str
    truncated: int
    created_at: str
    updated_at: str
    embrm_version: str

    @property
    def id(self) -> str:
        return S.entry_id(self.model_hash, self.dataset_hash)

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> Entry:
        return cls(
            model_hash=r["model_hash"],
            model_name=r["model_name"],
            model_config=json.loads(r["model_config"] or "{}"),
            dataset_hash=r["dataset_hash"],
            dataset_name=r["dataset_name"],
            dataset_source=json.loads(r["dataset_source"] or "{}"),
            kind=r["kind"],
            n_rows=int(r["n_rows"]),
            rows=int(r["rows"]),
            dim=int(r["dim"]),
            dtype=r["dtype"],
            layers=tuple(json.loads(r["layers"] or "[]")),
            status=r["status"],
            truncated=int(r["truncated"]),
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            embrm_version=r["embrm_version"],
        )

    @classmethod
    def from_summary(cls, d: Mapping[str, Any]) -> Entry:
        """The inverse of :meth:`summary` (plus ``model_config``), as the service sends entries."""
        return cls(d["model_hash"], d["model"], dict(d.get("model_config") or {}), d["dataset_hash"], d["dataset"],
                   dict(d.get("source") or {}), d["kind"], int(d["n_rows"]), int(d["rows"]), int(d["dim"]),
                   d["dtype"], tuple(d["layers"]), d["status"], int(d["truncated"]), d["created_at"],
                   d["updated_at"], d["embrm_version"])

    def summary(self) -> dict[str, Any]:
        """The machine-readable listing used by ``embrm store ls --json``."""
        return {
            "model": self.model_name,
            "model_hash": self.model_hash,
            "dataset": self.dataset_name,
            "dataset_hash": self.dataset_hash,
            "kind": self.kind,
            "rows": self.rows,
            "n_rows": self.n_rows,
            "dim": self.dim,
            "dtype": self.dtype,
            "layers": list(self.layers),
            "status": self.status,
            "truncated": self.truncated,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "embrm_version": self.embrm_version,
            "source": self.dataset_source,
        }


@dataclass(frozen=True)
class StoredVectors:
    """The result of a point read: which keys were found, and their vectors."""

    keys: list[str]  # as asked, in order
    found: np.ndarray  # (n,) bool
    vectors: dict[int, np.ndarray]  # layer -> (n, dim); rows of keys not found are zero
    n_tokens: np.ndarray  # (n,) int32, 0 where not found
    truncated: np.ndarray  # (n,) bool


class Store:
    """An embrm store at a local path or an object-store URI.

    Use :func:`open_store` to get one. All methods are safe to call from several
    processes at once, except :meth:`gc`.
    """

    def __init__(self, uri: str, tables: Tables):
        self.uri = uri
        self.tables = tables
        self.cache = LoadCache(uri)
        self._indexes: dict[str, tuple[Any, dict]] = {}
        self._indexes_lock = threading.Lock()

    def key_index(self, model_hash: str) -> tuple[Any, dict]:
        """The point-read index of a model's vector table and its page-layout cache, kept
        for the life of this Store object (see :mod:`embrm.store.keyindex`)."""
        from embrm.store.keyindex import KeyIndex

        with self._indexes_lock:
            if model_hash not in self._indexes:
                self._indexes[model_hash] = (KeyIndex(), {})
            return self._indexes[model_hash]

    @property
    def storage_options(self) -> dict[str, str]:
        return self.tables.storage_options

    # ----------------------------------------------------------------- catalog
    def _catalog(self) -> lance.LanceDataset:
        return self.tables.get(S.CATALOG_TABLE)

    def entries(self) -> list[Entry]:
        rows = [Entry.from_row(r) for r in self._catalog().to_table().to_pylist()]
        return sorted(rows, key=lambda e: (e.created_at, e.model_name, e.dataset_name))

    def _entry_row(self, model_hash: str, dataset_hash: str) -> dict[str, Any] | None:
        eid = S.entry_id(model_hash, dataset_hash)
        rows = self._catalog().to_table(filter=f"entry_id = {_sql_str(eid)}").to_pylist()
        return rows[0] if rows else None

    def entry(self, model_hash: str, dataset_hash: str) -> Entry | None:
        """The entry of these full hashes, or None."""
        row = self._entry_row(model_hash, dataset_hash)
        return Entry.from_row(row) if row else None

    def _put_entry(self, row: dict[str, Any]) -> None:
        _merge(self._catalog(), "entry_id", pa.Table.from_pylist([row], schema=S.CATALOG_SCHEMA), update=True)

    def resolve(self, model: str, dataset: str) -> Entry:
        """Find one entry by readable name, full hash or unique hash prefix of each key."""
        entries = self.entries()
        if not entries:
            raise EmbrmError(f"store {self.uri} has no entries yet; run `embrm extract` first")
        m = _match(entries, model, "model_hash", "model_name", "model")
        mh = m[0].model_hash
        if len({e.model_hash for e in m}) > 1:  # the same readable name under two configs
            raise EmbrmError(f"model key {model!r} is ambiguous: use its hash or a longer prefix")
        of_model = [e for e in entries if e.model_hash == mh]
        try:
            d = _match(of_model, dataset, "dataset_hash", "dataset_name", "dataset")
        except EmbrmError:
            _match(entries, dataset, "dataset_hash", "dataset_name", "dataset")  # unknown anywhere?
            raise EmbrmError(
                f"no entry for model {model!r} and dataset {dataset!r} in {self.uri}; "
                "`embrm store ls` lists the entries"
            ) from None
        return d[0]

    # ---------------------------------------------------------------- datasets
    def has_dataset(self, dataset_hash: str, n_rows: int | None = None) -> bool:
        """Whether the dataset's rows table exists (and holds ``n_rows`` rows)."""
        ds = self.tables.open(S.dataset_table(dataset_hash))
        return ds is not None and (n_rows is None or ds.count_rows() == n_rows)

    def write_dataset_rows(self, dataset_hash: str, rows: Iterable[dict[str, Any]] | Iterable[pa.RecordBatch],
                           n_rows: int) -> None:
        """Write the dataset's rows table, in chunks, idempotently (keyed by position).

        ``rows`` are dicts of the row schema or Arrow record batches of it. Re-running
        after a crash or alongside another writer of the same dataset is safe:
        ``merge_insert`` on ``position`` skips rows already there.
        """
        if self.has_dataset(dataset_hash, n_rows):
            return
        name = S.dataset_table(dataset_hash)
        self.tables.create(name, S.ROW_SCHEMA)
        for data in _row_chunks(rows, ROW_CHUNK):
            with commit_lock(self.tables, name):
                _merge(self.tables.get(name), "position", data)  # the latest version, under the lock
        got = self.tables.get(name).count_rows()
        if got != n_rows:
            raise EmbrmError(
                f"dataset {short(dataset_hash)} has {got} stored rows but {n_rows} were expected; "
                "the dataset changed while it was read: re-run the command"
            )

    def _rows_table(self, dataset_hash: str) -> lance.LanceDataset:
        ds = self.tables.open(S.dataset_table(dataset_hash))
        if ds is None:
            raise EmbrmError(f"dataset {short(dataset_hash)} has no rows in {self.uri}")
        return ds

    def iter_dataset_rows(self, dataset_hash: str, columns: list[str] | None = None, batch_size: int = 4096,
                          offset: int = 0, limit: int | None = None) -> Iterator[pa.RecordBatch]:
        """The dataset's rows in position (dataset) order, ``batch_size`` at a time;
        ``offset``/``limit`` select a range of that order (a resumed pull).

        Memory is bounded by the batch and one int64 per row (the positions, read once
        to check the stored order; rows written by one writer are already in order).
        """
        ds = self._rows_table(dataset_hash)
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

    def dataset_rows(self, dataset_hash: str, columns: list[str] | None = None) -> pa.Table:
        """The dataset's rows in order, as one table."""
        ds = self._rows_table(dataset_hash)
        cols = None if columns is None else list(dict.fromkeys(["position", *columns]))
        t = ds.to_table(columns=cols)
        pos = t.column("position").to_numpy()
        if len(pos) > 1 and not np.all(pos[1:] > pos[:-1]):
            t = t.take(pa.array(np.argsort(pos, kind="stable")))
        return t

    # ----------------------------------------------------------------- vectors
    def _vectors(self, model_hash: str) -> lance.LanceDataset | None:
        return self.tables.open(S.vector_table(model_hash))

    def vector_info(self, model_hash: str) -> VectorInfo | None:
        """Dim, dtype and layers of a model's vector table, or None if it has none yet."""
        ds = self._vectors(model_hash)
        return None if ds is None else VectorInfo.of_schema(ds.schema)

    def vector_keys(self, model_hash: str, columns: tuple[str, ...] = ()) -> pa.Table:
        """The one scan of a vector table's keys (plus small ``columns``), in table order."""
        ds = self._vectors(model_hash)
        cols = ["item_key", *columns]
        if ds is None:
            return S.vector_schema(1, "float32", (-1,)).empty_table().select(cols)
        return key_columns(ds, cols)

    def cached_keys(self, model_hash: str) -> pa.Array:
        """Every item key that has a vector under this model fingerprint."""
        return self.vector_keys(model_hash).column("item_key").combine_chunks()

    def missing_keys(self, model_hash: str, keys: pa.Array | pa.ChunkedArray | list[str]) -> pa.Array:
        """The distinct ``keys`` that have no vector under this model, in first-seen order."""
        arr = keys if isinstance(keys, (pa.Array, pa.ChunkedArray)) else pa.array(keys, pa.string())
        uniq = pc.unique(arr)
        if isinstance(uniq, pa.ChunkedArray):
            uniq = uniq.combine_chunks()
        have = self.cached_keys(model_hash)
        if len(have) == 0:
            return uniq
        return uniq.filter(pc.invert(pc.is_in(uniq, value_set=have)))

    def get_vectors(self, model_hash: str, keys: list[str], layers: Iterable[int] | None = None) -> StoredVectors:
        """Point read: the stored vectors of ``keys`` (one layer or several), without a scan
        of the whole table. Keys without a vector come back with ``found`` False."""
        from embrm.store.keyindex import read_rows

        return read_rows(self, model_hash, keys, layers)

    def commit_vectors(self, model_hash: str, data: pa.Table) -> int:
        """Insert a table built by :func:`build_vector_table` as one commit, under the
        table's commit lock. Items already stored are skipped; returns the rows inserted.
        """
        info = VectorInfo.of_schema(data.schema)
        name = S.vector_table(model_hash)
        have = self.vector_info(model_hash)
        if have is None:
            self.tables.create(name, info.schema())
            have = self.vector_info(model_hash)
        if have is not None and (have.dim, have.dtype, set(have.layers)) != (info.dim, info.dtype, set(info.layers)):
            raise EmbrmError(f"vectors of {info} do not fit model {short(model_hash)}'s table of {have}; "
                             "a different configuration needs its own fingerprint")
        if have is not None and have.layers != info.layers:
            data = data.select(have.schema().names)
        with commit_lock(self.tables, name):
            ds = self.tables.get(name)  # the latest version, under the lock
            if is_remote(self.uri):
                res = _merge(ds, "item_key", data)
                return int(res.get("num_inserted_rows", 0)) if isinstance(res, dict) else len(data)
            return self._append_new(model_hash, ds, data)

    def _append_new(self, model_hash: str, ds: lance.LanceDataset, data: pa.Table) -> int:
        """Append the rows of ``data`` whose keys the table lacks (first occurrence of each),
        in their given order. Only under the local commit lock, where nobody else commits:
        the check and the append are then one step. Appending keeps a table in the order
        its items were extracted (dataset order), so a load reads long runs straight into
        place; ``merge_insert`` would reorder each commit."""
        import lance

        keys = data.column("item_key").to_pylist()
        stored = self._stored(model_hash, ds, keys)
        _, first = np.unique(np.array(keys, dtype=object), return_index=True)
        keep = np.zeros(len(keys), bool)
        keep[first] = True
        keep &= ~stored
        if not keep.any():
            return 0
        new = data.filter(pa.array(keep)).cast(ds.schema)
        retry(lambda: lance.write_dataset(new, self.tables.path(S.vector_table(model_hash)), mode="append"))
        return len(new)

    def _stored(self, model_hash: str, ds: lance.LanceDataset, keys: list[str]) -> np.ndarray:
        """Which ``keys`` table version ``ds`` stores, by the key index (which reads only the
        fragments added since it last looked, so a commit's check costs its own keys)."""
        index, _ = self.key_index(model_hash)
        with index.lock:
            index.refresh(ds)
            return index.lookup(keys)[0] >= 0

    def write_vectors(self, model_hash: str, item_keys: list[str], vectors: Mapping[int, np.ndarray],
                      n_tokens: np.ndarray, truncated: np.ndarray, dtype: str = "float32") -> int:
        """Build and commit one chunk of vectors (see :meth:`commit_vectors`). A batch
        that does not fit the table is refused before anything is written."""
        data = build_vector_table(item_keys, vectors, n_tokens, truncated, dtype, expect=self.vector_info(model_hash))
        return self.commit_vectors(model_hash, data)

    # ---------------------------------------------------- distributed writers
    def rows_at(self, dataset_hash: str, offsets: np.ndarray, columns: list[str], version: int | None = None
                ) -> pa.Table:
        """Rows of a dataset by their offsets in the rows table (as :meth:`physical_keys`
        gives them): how a worker reads the items a driver sent it, without the texts
        travelling through the driver."""
        ds = self.tables.get(S.dataset_table(dataset_hash), version)
        return ds.take(np.asarray(offsets, dtype=np.int64), columns=columns)

    def physical_keys(self, dataset_hash: str, batch_size: int = 65536) -> Iterator[tuple[int, pa.Array]]:
        """(first offset, item keys) of the rows table in its stored order, a batch at a time."""
        at = 0
        for b in self._rows_table(dataset_hash).to_batches(columns=["item_key"], batch_size=batch_size):
            yield at, b.column(0)
            at += len(b)

    def ensure_vector_table(self, model_hash: str, info: VectorInfo) -> None:
        """Create a model's vector table before workers write fragments into it."""
        have = self.vector_info(model_hash)
        if have is None:
            self.tables.create(S.vector_table(model_hash), info.schema())
        elif (have.dim, have.dtype, set(have.layers)) != (info.dim, info.dtype, set(info.layers)):
            raise EmbrmError(f"model {short(model_hash)} stores {have}, not {info}")

    def write_vector_fragments(self, model_hash: str, data: pa.Table) -> list[str]:
        """Write vectors as uncommitted Lance fragments (a worker's side of a distributed
        extraction); returns their metadata as JSON for the driver to commit. Until then
        they are invisible, and ``gc`` removes them if nobody ever commits them."""
        from lance.fragment import write_fragments

        ds = self.tables.get(S.vector_table(model_hash))
        frags = write_fragments(data.cast(ds.schema), self.tables.path(S.vector_table(model_hash)), schema=ds.schema,
                                storage_options=self.storage_options or None)
        return [json.dumps(f.to_json()) for f in frags]

    def commit_vector_fragments(self, model_hash: str, fragments: list[str], keys: pa.Array) -> int:
        """Commit workers' fragments as one append, under the table's commit lock.

        Checked first: the fragments hold exactly ``len(keys)`` rows, no key comes twice,
        and none is stored already. A fragment whose keys another writer stored meanwhile
        is read back and merged instead (its file is left for ``gc``), so the table never
        holds a key twice. Returns the rows added.
        """
        import lance
        from lance.fragment import FragmentMetadata

        frags = [FragmentMetadata.from_json(f) for f in fragments]
        rows = sum(f.physical_rows for f in frags)
        if rows != len(keys):
            raise EmbrmError(f"workers' fragments hold {rows} rows but {len(keys)} items were sent; nothing committed")
        if len(pc.unique(keys)) != len(keys):
            raise EmbrmError("an item key arrived twice from the workers; nothing committed")
        name = S.vector_table(model_hash)
        with commit_lock(self.tables, name):
            ds = self.tables.get(name)
            # on object stores there is no lock, and a plain append is not checked against a
            # concurrent writer's inserts: there the rows always go through merge_insert
            if not is_remote(self.uri) and not self._stored(model_hash, ds, keys.to_pylist()).any():
                retry(lambda: lance.LanceDataset.commit(self.tables.path(name), lance.LanceOperation.Append(frags),
                                                        read_version=ds.version,
                                                        storage_options=self.storage_options or None))
                return rows
            data = pa.concat_tables(_read_fragment(self.tables.path(name), f, self.storage_options) for f in frags)
            res = _merge(ds, "item_key", data)
        return int(res.get("num_inserted_rows", 0)) if isinstance(res, dict) else len(data)

    # ------------------------------------------------------------------- served
    def record_served(self, model_hash: str, model_name: str, model_config: dict[str, Any], keys: list[str],
                      prompts: list[str], responses: list[str]) -> Entry:
        """Add items the service computed for ad-hoc requests to the model's ``served``
        entry, so that ``gc`` keeps their vectors (they belong to no dataset) and
        ``store ls``/``export``/``rm`` see them like any entry.

        The served "dataset" is the one rows table that grows: its key is a hash of the
        model's, rows are appended under its commit lock, once per item key.
        """
        dh = S.served_dataset_hash(model_hash)
        name = S.dataset_table(dh)
        self.tables.create(name, S.SERVED_ROW_SCHEMA)
        with commit_lock(self.tables, name):
            ds = self.tables.get(name)
            start = ds.count_rows()
            pos = np.arange(start, start + len(keys), dtype=np.int64)
            data = pa.table({"position": pos, "item_key": pa.array(keys, pa.string()), "prompt_id": pos,
                             "response_index": pa.array(np.zeros(len(keys), np.int32)),
                             "role": pa.array([""] * len(keys)), "label": pa.nulls(len(keys), pa.float64()),
                             "reward": pa.nulls(len(keys), pa.float64()),
                             "prompt": pa.array(prompts, pa.large_string()),
                             "response": pa.array(responses, pa.large_string())})
            _merge(ds, "item_key", data)
            n = self.tables.get(name).count_rows()
        self.begin_entry(model_hash, model_name, model_config, dh, S.SERVED_NAME, {"source": "embrm serve"},
                         "pointwise", n)
        info = self.vector_info(model_hash)
        with commit_lock(self.tables, S.CATALOG_TABLE):
            row = dict(self._entry_row(model_hash, dh) or {})
            row.update(n_rows=n, rows=n, status="complete", updated_at=_now())
            if info is not None:
                row.update(dim=info.dim, dtype=info.dtype, layers=json.dumps(list(info.layers)))
            self._put_entry(row)
        return Entry.from_row(row)

    # ------------------------------------------------------------------ entries
    def table_versions(self, e: Entry) -> tuple[int, int]:
        """(vector table version, rows table version): what a cached load or an ETag keys on."""
        return (self.tables.get(S.vector_table(e.model_hash)).version,
                self.tables.get(S.dataset_table(e.dataset_hash)).version)

    def begin_entry(self, model_hash: str, model_name: str, model_config: dict[str, Any], dataset_hash: str,
                    dataset_name: str, dataset_source: dict[str, Any], kind: str, n_rows: int) -> None:
        """Record that an extraction of this (model, dataset) has started (status partial)."""
        if kind not in S.KINDS:
            raise EmbrmError(f"dataset kind {kind!r} is unknown; use one of {S.KINDS}")
        now = _now()
        row = {
            "entry_id": S.entry_id(model_hash, dataset_hash),
            "model_hash": model_hash,
            "model_name": model_name,
            "model_config": json.dumps(model_config, sort_keys=True),
            "dataset_hash": dataset_hash,
            "dataset_name": dataset_name,
            "dataset_source": json.dumps(dataset_source, sort_keys=True),
            "kind": kind,
            "n_rows": n_rows,
            "rows": 0,
            "dim": 0,
            "dtype": "",
            "layers": "[]",
            "status": "partial",
            "truncated": 0,
            "created_at": now,
            "updated_at": now,
            "embrm_version": __version__,
        }
        with commit_lock(self.tables, S.CATALOG_TABLE):  # check and insert as one step
            if self._entry_row(model_hash, dataset_hash) is None:
                self._put_entry(row)

    def finish_entry(self, model_hash: str, dataset_hash: str, compact: bool = True) -> Entry:
        """Count what is stored for the entry, set its status, and compact the tables.

        ``rows`` counts stored vectors of the dataset's rows (a pair counts as two).
        Compaction here keeps many small chunk commits from fragmenting the table.
        """
        row = self._entry_row(model_hash, dataset_hash)
        if row is None:
            raise EmbrmError(f"no entry for model {short(model_hash)} and dataset {short(dataset_hash)}")
        keys = self.dataset_rows(dataset_hash, ["item_key"]).column("item_key")
        info = self.vector_info(model_hash)
        stored = truncated = 0
        if info is not None:  # one scan gives both presence and truncation flags
            vt = self.vector_keys(model_hash, ("truncated",))
            idx = pc.index_in(keys, value_set=vt.column("item_key").combine_chunks())
            stored = len(keys) - idx.null_count
            truncated = int(pc.sum(pc.take(vt.column("truncated"), pc.drop_null(idx))).as_py() or 0)
        row = dict(row)
        row.update(rows=stored, status="complete" if stored == row["n_rows"] else "partial", truncated=truncated,
                   updated_at=_now())
        if info is not None:
            row.update(dim=info.dim, dtype=info.dtype, layers=json.dumps(list(info.layers)))
        with commit_lock(self.tables, S.CATALOG_TABLE):
            self._put_entry(row)
        if compact:
            self.compact(S.vector_table(model_hash))
        return Entry.from_row(row)

    def compact(self, name: str, min_fragments: int = COMPACT_AFTER) -> None:
        """Merge small fragments into few; old versions are kept (readers may hold them)."""
        ds = self.tables.open(name)
        if ds is None or len(ds.get_fragments()) <= min_fragments:
            return
        try:
            with commit_lock(self.tables, name):
                retry(lambda: self.tables.get(name).optimize.compact_files())
        except Exception as e:  # compaction is an optimisation: never fail a write for it
            if "conflict" not in str(e).lower():
                raise

    def delete(self, model: str, dataset: str) -> Entry:
        """Remove one entry from the catalog. Its vectors stay until ``gc``, since other
        datasets may share them."""
        e = self.resolve(model, dataset)
        with commit_lock(self.tables, S.CATALOG_TABLE):
            retry(lambda: self._catalog().delete(f"entry_id = {_sql_str(e.id)}"))
        return e

    def gc(self) -> dict[str, int]:
        """Drop what no entry refers to, compact every table, remove old versions and files
        no version refers to (a crash's uncommitted fragments), and clear stale caches.

        Run it when nothing else uses the store: a reader or writer of an old version, or
        a writer whose files are not committed yet, can fail or lose its work.
        """
        entries = self.entries()
        used = {S.CATALOG_TABLE, S.META_TABLE}
        used |= {S.dataset_table(e.dataset_hash) for e in entries}
        used |= {S.vector_table(e.model_hash) for e in entries}
        dropped = vectors_deleted = 0
        for name in sorted(self.tables.names() - used):
            if name.startswith(("ds_", "vec_")):
                self.tables.drop(name)
                dropped += 1
        for mh in {e.model_hash for e in entries}:
            if self._vectors(mh) is None:
                continue
            wanted = [self.dataset_rows(e.dataset_hash, ["item_key"]).column("item_key")
                      for e in entries if e.model_hash == mh and self.has_dataset(e.dataset_hash)]
            have = self.cached_keys(mh)
            want = pa.chunked_array([c for k in wanted for c in k.chunks], pa.string()).combine_chunks()
            orphan = have.filter(pc.invert(pc.is_in(have, value_set=want)))
            name = S.vector_table(mh)
            for s in range(0, len(orphan), 1000):
                lst = ",".join(_sql_str(k) for k in orphan[s:s + 1000].to_pylist())
                with commit_lock(self.tables, name):
                    retry(lambda: self.tables.get(name).delete(f"item_key IN ({lst})"))
            vectors_deleted += len(orphan)
        for name in sorted(self.tables.names()):
            self.compact(name, min_fragments=1)
            retry(lambda: self.tables.get(name).cleanup_old_versions(older_than=timedelta(0), delete_unverified=True))
        return {"tables_dropped": dropped, "vectors_deleted": vectors_deleted,
                "cache_files_removed": self.cache.clear_stale(self._current_cache_names())}

    def _current_cache_names(self) -> set[str]:
        keep: set[str] = set()
        for e in self.entries():
            if not e.layers or self._vectors(e.model_hash) is None:
                continue
            versions = self.table_versions(e)
            keep |= {self.cache.name(self.cache.stem(e.model_hash, e.dataset_hash, S.layer_column(layer)), versions)
                     for layer in e.layers}
        return keep

    # -------------------------------------------------------------------- read
    def load(self, model: str, dataset: str, layer: int | None = None, **kw: Any) -> Embeddings:
        """One entry's vectors and rows in dataset order (see :func:`embrm.store.loader.load`)."""
        from embrm.store.loader import load

        return load(self, model, dataset, layer=layer, **kw)

    def iter_entry(self, model: str, dataset: str, layer: int | None = None, batch_size: int = 8192,
                   **kw: Any) -> Iterator[EntryBatch]:
        """An entry in dataset order, ``batch_size`` rows at a time (see
        :func:`embrm.store.loader.iter_entry`)."""
        from embrm.store.loader import iter_entry

        return iter_entry(self, model, dataset, layer=layer, batch_size=batch_size, **kw)


def _read_fragment(table_uri: str, frag: Any, storage_options: dict[str, str]) -> pa.Table:
    """The rows of an uncommitted fragment, read from its data file (a fresh fragment has
    one file holding every column)."""
    from lance.file import LanceFileReader

    if len(frag.files) != 1:
        raise EmbrmError(f"a worker's fragment has {len(frag.files)} data files; expected one")
    path = f"{table_uri}/data/{frag.files[0].path}"
    return LanceFileReader(path, storage_options=storage_options or None).read_all().to_table()


def _merge(ds: lance.LanceDataset, on: str, data: pa.Table, update: bool = False) -> Any:
    """``merge_insert`` of ``data`` on key ``on``: insert new keys (and with ``update``,
    replace existing ones). Batches take the table's own schema, whose key field carries
    Lance's primary-key marker where the table was created by this embrm."""
    data = data.cast(ds.schema)

    def run() -> Any:
        b = ds.merge_insert(on)
        if update:
            b = b.when_matched_update_all()
        return b.when_not_matched_insert_all().execute(data)

    return retry(run)


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


def _match(entries: list[Entry], key: str, hash_attr: str, name_attr: str, what: str) -> list[Entry]:
    """Entries whose name equals ``key``, else whose hash starts with it; one hash only."""
    by_name = [e for e in entries if getattr(e, name_attr) == key]
    if by_name:
        return by_name
    hits = [e for e in entries if key and getattr(e, hash_attr).startswith(key.lower())]
    if not hits:
        raise EmbrmError(f"unknown {what} key {key!r}: `embrm store ls` lists names and hashes")
    n = len({getattr(e, hash_attr) for e in hits})
    if n > 1:
        raise EmbrmError(f"{what} key {key!r} is ambiguous ({n} matches); use a longer hash prefix")
    return hits


def open_store(uri: str | os.PathLike[str] | None = None, create: bool = False,
               storage_options: dict[str, str] | None = None) -> Store:
    """Open the store at ``uri`` (default ``$EMBRM_STORE`` or ``./embrm-store``).

    With ``create=True`` a missing or empty location becomes a new store. A location that
    holds something other than an embrm store is refused either way, so embrm never
    writes into someone else's data. Object-store URIs (``s3://bucket/prefix``) take
    their credentials and endpoint from the standard AWS environment variables.
    """
    uri = str(uri) if uri is not None else default_store_uri()
    if not is_remote(uri):
        p = local_path(uri)
        if p.exists() and not p.is_dir():
            raise EmbrmError(f"{uri} is a file, not an embrm store; pass --store with a directory")
        if not p.exists() and not create:
            raise EmbrmError(f"no embrm store at {uri}; run `embrm extract` to create one, or pass --store")
        # another process may be creating this store right now: its catalog appears first
        being_created = {f"{S.CATALOG_TABLE}.lance", f"{S.META_TABLE}.lance", "_embrm_locks"}
        if p.is_dir() and not (p / f"{S.META_TABLE}.lance").exists() and \
                any(c.name not in being_created for c in p.iterdir()):
            raise EmbrmError(f"{uri} is not an embrm store (no {S.META_TABLE} table); "
                             "pass --store with an embrm store")
        if create:
            p.mkdir(parents=True, exist_ok=True)
        tables = Tables(uri, storage_options)
    else:
        from embrm.store.remote import remote_tables

        tables = remote_tables(uri, storage_options)
    store = Store(uri, tables)
    meta = tables.open(S.META_TABLE)
    if meta is None:
        if not create:
            raise EmbrmError(f"no embrm store at {uri}; run `embrm extract` to create one, or pass --store")
        if is_remote(uri) and tables.names() - {S.CATALOG_TABLE}:
            raise EmbrmError(f"{uri} is not an embrm store (no {S.META_TABLE} table); "
                             "pass --store with an embrm store")
        tables.create(S.CATALOG_TABLE, S.CATALOG_SCHEMA)
        rows = pa.Table.from_pylist(
            [{"key": "format_version", "value": str(S.FORMAT_VERSION)}, {"key": "created_by", "value": __version__}],
            schema=S.META_SCHEMA)
        tables.create(S.META_TABLE, S.META_SCHEMA, rows)
    else:
        fmt = {r["key"]: r["value"] for r in meta.to_table().to_pylist()}
        if int(fmt.get("format_version", "0")) > S.FORMAT_VERSION:
            raise EmbrmError(
                f"store {uri} has format {fmt.get('format_version')}, newer than this embrm "
                f"({__version__}) reads; upgrade embrm"
            )
    return store
