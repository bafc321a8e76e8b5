"""The LanceDB embedding store: open, register datasets, write vectors, list entries.

Reading (``load``) lives in :mod:`embrm.store.loader`, export in
:mod:`embrm.store.export`; this module owns the tables and their invariants:

* every write is a LanceDB commit (atomic: a crash leaves the table at the previous
  version), done in chunks so a crash loses at most one chunk of work;
* vectors are inserted with ``merge_insert`` on the item key, so a re-run, a resume or a
  second process writing the same items never leaves a duplicate;
* an entry is ``complete`` only when every row of its dataset has a vector.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embrm import __version__
from embrm.errors import EmbrmError
from embrm.store import schema as S
from embrm.store.keys import short

T = TypeVar("T")

DEFAULT_STORE = "./embrm-store"
ROW_CHUNK = 20_000


def default_store_uri() -> str:
    return os.environ.get("EMBRM_STORE", DEFAULT_STORE)


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _retry(fn: Callable[[], T], tries: int = 30) -> T:
    """Retry a commit that lost a race with another writer.

    Lance commits are optimistic: two processes committing at once may see a conflict
    error, and the loser must try again on the new version.
    """
    for attempt in range(tries):
        try:
            return fn()
        except Exception as e:  # lance raises plain OSError/RuntimeError on conflicts
            msg = str(e).lower()
            if "conflict" not in msg and "retry" not in msg or attempt == tries - 1:
                raise
            time.sleep(0.02 * (1 + attempt) * (1 + random.random()))
    raise AssertionError("unreachable")


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

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> "Entry":
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


class Store:
    """An embrm store at a local path or an object-store URI.

    Use :func:`open_store` to get one. All methods are safe to call from several
    processes at once.
    """

    def __init__(self, uri: str, db: Any, storage_options: dict[str, str] | None = None):
        self.uri = uri
        self.db = db
        self.storage_options = storage_options or {}

    # ------------------------------------------------------------------ tables
    def _names(self) -> set[str]:
        res = self.db.list_tables()
        names = getattr(res, "tables", res)
        return set(names)

    def has_table(self, name: str) -> bool:
        return name in self._names()

    def table(self, name: str) -> Any:
        return self.db.open_table(name)

    def _catalog(self) -> Any:
        return self.table(S.CATALOG_TABLE)

    @contextlib.contextmanager
    def _write_lock(self, name: str) -> Iterator[None]:
        """Serialise check-and-insert commits to one table across local processes.

        ``merge_insert`` alone is not enough: two processes that both start from a version
        without some key were seen to insert it twice. Under this lock each insert is
        planned on the table's latest version. Object stores have no such lock; there
        duplicates that a race leaves are harmless to loads (the first copy is used).
        """
        if is_remote(self.uri):
            yield
            return
        import fcntl

        d = Path(self.uri.removeprefix("file://")) / "_embrm_locks"
        d.mkdir(exist_ok=True)
        with open(d / f"{name}.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @property
    def cache_dir(self) -> Path:
        """Where memory-mappable materialisations of loads live (never the truth)."""
        env = os.environ.get("EMBRM_CACHE")
        if env:
            import hashlib

            return Path(env) / hashlib.sha256(self.uri.encode()).hexdigest()[:16]
        if is_remote(self.uri):
            import hashlib

            base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "embrm"
            return base / hashlib.sha256(self.uri.encode()).hexdigest()[:16]
        return Path(self.uri) / "_embrm_cache"

    # ----------------------------------------------------------------- catalog
    def entries(self) -> list[Entry]:
        t = self._catalog().to_arrow()
        rows = [Entry.from_row(r) for r in t.to_pylist()]
        return sorted(rows, key=lambda e: (e.created_at, e.model_name, e.dataset_name))

    def _entry_row(self, model_hash: str, dataset_hash: str) -> dict[str, Any] | None:
        eid = f"{model_hash}:{dataset_hash}"
        t = self._catalog().search().where(f"entry_id = '{eid}'").to_arrow()
        rows = t.to_pylist()
        return rows[0] if rows else None

    def _put_entry(self, row: dict[str, Any]) -> None:
        tbl = pa.Table.from_pylist([row], schema=S.CATALOG_SCHEMA)
        _retry(
            lambda: self._catalog()
            .merge_insert("entry_id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(tbl)
        )

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
    def dataset_rows_complete(self, dataset_hash: str, n_rows: int) -> bool:
        name = S.dataset_table(dataset_hash)
        return self.has_table(name) and self.table(name).count_rows() == n_rows

    def write_dataset_rows(self, dataset_hash: str, rows: Iterable[dict[str, Any]], n_rows: int) -> None:
        """Write the dataset's rows table, in chunks, idempotently (keyed by position).

        Re-running after a crash or alongside another writer of the same dataset is
        safe: ``merge_insert`` on ``position`` skips rows already there.
        """
        if self.dataset_rows_complete(dataset_hash, n_rows):
            return
        name = S.dataset_table(dataset_hash)
        if not self.has_table(name):
            try:
                self.db.create_table(name, schema=S.ROW_SCHEMA, exist_ok=True)
            except Exception:
                if not self.has_table(name):
                    raise
        for chunk in _chunks(rows, ROW_CHUNK):
            data = pa.Table.from_pylist(chunk, schema=S.ROW_SCHEMA)
            with self._write_lock(name):
                tbl = self.table(name)  # the latest version, under the lock
                _retry(lambda: tbl.merge_insert("position").when_not_matched_insert_all().execute(data))
        got = self.table(name).count_rows()
        if got != n_rows:
            raise EmbrmError(
                f"dataset {short(dataset_hash)} has {got} stored rows but {n_rows} were expected; "
                "the dataset changed while it was read: re-run the command"
            )

    def dataset_rows(self, dataset_hash: str, columns: list[str] | None = None) -> pa.Table:
        """The dataset's rows in order (sorted by position)."""
        name = S.dataset_table(dataset_hash)
        if not self.has_table(name):
            raise EmbrmError(f"dataset {short(dataset_hash)} has no rows in {self.uri}")
        ds = self.table(name).to_lance()
        cols = None if columns is None else list(dict.fromkeys(["position", *columns]))
        t = ds.to_table(columns=cols)
        pos = t.column("position").to_numpy()
        if len(pos) > 1 and not np.all(pos[1:] > pos[:-1]):
            t = t.take(pa.array(np.argsort(pos, kind="stable")))
        return t

    # ----------------------------------------------------------------- vectors
    def vector_info(self, model_hash: str) -> tuple[int, str, tuple[int, ...]] | None:
        """(dim, dtype, layers) of a model's vector table, or None if it has none yet."""
        name = S.vector_table(model_hash)
        if not self.has_table(name):
            return None
        return _schema_info(self.table(name).schema)

    def cached_keys(self, model_hash: str) -> pa.Array:
        """Every item key that has a vector under this model fingerprint."""
        name = S.vector_table(model_hash)
        if not self.has_table(name):
            return pa.array([], pa.string())
        t = self.table(name).to_lance().to_table(columns=["item_key"])
        return t.column("item_key").combine_chunks()

    def write_vectors(
        self,
        model_hash: str,
        item_keys: list[str],
        vectors: Mapping[int, np.ndarray],
        n_tokens: np.ndarray,
        truncated: np.ndarray,
        dtype: str = "float32",
    ) -> None:
        """Insert one chunk of vectors as one commit; items already stored are skipped.

        ``vectors`` maps layer -> (n, dim) array. The first write fixes the table's dim,
        dtype and layers; a later write that disagrees is refused before anything is
        written, so a bad call never leaves half a chunk behind.
        """
        if dtype not in S.VECTOR_DTYPES:
            raise EmbrmError(f"vector dtype {dtype!r} is not supported; use one of {S.VECTOR_DTYPES}")
        n = len(item_keys)
        layers = tuple(vectors)
        if not layers:
            raise EmbrmError("no layers given to write")
        dims = {v.shape[1] if v.ndim == 2 else -1 for v in vectors.values()}
        if len(dims) != 1 or -1 in dims:
            raise EmbrmError("every layer's vectors must be 2-D (rows, dim) with the same dim")
        dim = dims.pop()
        for layer, v in vectors.items():
            if v.shape[0] != n:
                raise EmbrmError(f"layer {layer} has {v.shape[0]} vectors for {n} item keys")
            if not np.isfinite(v).all():
                raise EmbrmError(f"layer {layer} has NaN or inf values; refusing to store them")
        info = self.vector_info(model_hash)
        if info is not None:
            have_dim, have_dtype, have_layers = info
            if have_dim != dim:
                raise EmbrmError(
                    f"vectors have dim {dim} but model {short(model_hash)} stores dim {have_dim}; "
                    "a different model needs its own fingerprint"
                )
            if have_dtype != dtype:
                raise EmbrmError(
                    f"vectors are {dtype} but model {short(model_hash)} stores {have_dtype}; "
                    f"cast to {have_dtype} or extract under a new fingerprint"
                )
            if set(have_layers) != set(layers):
                raise EmbrmError(
                    f"vectors are for layers {list(layers)} but model {short(model_hash)} stores "
                    f"layers {list(have_layers)}"
                )
            layers = have_layers
        np_dtype = np.float16 if dtype == "float16" else np.float32
        sch = S.vector_schema(dim, dtype, layers)
        cols: list[pa.Array] = [
            pa.array(item_keys, pa.string()),
            pa.array(np.asarray(n_tokens, dtype=np.int32)),
            pa.array(np.asarray(truncated, dtype=bool)),
        ]
        for layer in layers:
            flat = np.ascontiguousarray(vectors[layer], dtype=np_dtype).reshape(-1)
            cols.append(pa.FixedSizeListArray.from_arrays(pa.array(flat), dim))
        data = pa.Table.from_arrays(cols, schema=sch)
        name = S.vector_table(model_hash)
        if info is None:
            try:
                self.db.create_table(name, schema=sch, exist_ok=True)
            except Exception:
                if not self.has_table(name):
                    raise
            created = self.vector_info(model_hash)
            if created is not None and created[:2] != (dim, dtype):
                raise EmbrmError(f"another writer created model {short(model_hash)} with {created}")
        with self._write_lock(name):
            tbl = self.table(name)  # the latest version, under the lock
            _retry(lambda: tbl.merge_insert("item_key").when_not_matched_insert_all().execute(data))

    # ------------------------------------------------------------------ entries
    def begin_entry(
        self,
        model_hash: str,
        model_name: str,
        model_config: dict[str, Any],
        dataset_hash: str,
        dataset_name: str,
        dataset_source: dict[str, Any],
        kind: str,
        n_rows: int,
    ) -> None:
        """Record that an extraction of this (model, dataset) has started (status partial)."""
        if kind not in S.KINDS:
            raise EmbrmError(f"dataset kind {kind!r} is unknown; use one of {S.KINDS}")
        now = _now()
        row = {
            "entry_id": f"{model_hash}:{dataset_hash}",
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
        with self._write_lock(S.CATALOG_TABLE):  # check and insert as one step
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
            vt = self.table(S.vector_table(model_hash)).to_lance().to_table(columns=["item_key", "truncated"])
            idx = pc.index_in(keys, value_set=vt.column("item_key").combine_chunks())
            stored = len(keys) - idx.null_count
            truncated = int(pc.sum(pc.take(vt.column("truncated"), pc.drop_null(idx))).as_py() or 0)
        row = dict(row)
        row.update(
            rows=stored,
            status="complete" if stored == row["n_rows"] else "partial",
            truncated=truncated,
            updated_at=_now(),
        )
        if info is not None:
            row.update(dim=info[0], dtype=info[1], layers=json.dumps(list(info[2])))
        with self._write_lock(S.CATALOG_TABLE):
            self._put_entry(row)
        if compact:
            self.optimize_table(S.vector_table(model_hash))
        return Entry.from_row(row)

    def optimize_table(self, name: str) -> None:
        """Compact small fragments; old versions are kept (readers may hold them)."""
        if not self.has_table(name):
            return
        tbl = self.table(name)
        try:
            if len(tbl.to_lance().get_fragments()) > 8:
                _retry(lambda: tbl.optimize())
        except Exception as e:  # compaction is an optimisation: never fail a write for it
            if "conflict" not in str(e).lower():
                raise

    def delete(self, model: str, dataset: str) -> Entry:
        """Remove one entry from the catalog. Its vectors stay until ``gc``, since other
        datasets may share them."""
        e = self.resolve(model, dataset)
        eid = f"{e.model_hash}:{e.dataset_hash}"
        _retry(lambda: self._catalog().delete(f"entry_id = '{eid}'"))
        return e

    def gc(self) -> dict[str, int]:
        """Drop what no entry refers to, compact every table, and clear stale caches.

        Old table versions are removed too, which frees disk but means a process that is
        reading or writing the store at the same moment can fail: run it when idle.
        """
        from embrm.store.loader import clear_stale_cache

        entries = self.entries()
        used_models = {e.model_hash for e in entries}
        used_datasets = {e.dataset_hash for e in entries}
        dropped = vectors_deleted = 0
        for name in sorted(self._names()):
            if name.startswith("ds_") and not any(S.dataset_table(h) == name for h in used_datasets):
                self.db.drop_table(name)
                dropped += 1
            elif name.startswith("vec_") and not any(S.vector_table(h) == name for h in used_models):
                self.db.drop_table(name)
                dropped += 1
        for mh in used_models:
            keys = [self.dataset_rows(e.dataset_hash, ["item_key"]).column("item_key")
                    for e in entries if e.model_hash == mh and self.has_table(S.dataset_table(e.dataset_hash))]
            vt = self.table(S.vector_table(mh)) if self.has_table(S.vector_table(mh)) else None
            if vt is None:
                continue
            have = vt.to_lance().to_table(columns=["item_key"]).column("item_key")
            wanted = pa.chunked_array([c for k in keys for c in k.chunks], pa.string()).combine_chunks()
            orphan = pc.filter(have, pc.invert(pc.is_in(have, value_set=wanted)))
            if len(orphan):
                for chunk in _chunks(orphan.to_pylist(), 1000):
                    lst = ",".join(f"'{k}'" for k in chunk)
                    _retry(lambda: vt.delete(f"item_key IN ({lst})"))
                vectors_deleted += len(orphan)
        from datetime import timedelta

        import warnings

        for name in sorted(self._names()):  # gc is explicit: old versions go (see docstring)
            tbl = self.table(name)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                _retry(lambda: tbl.optimize(cleanup_older_than=timedelta(seconds=0)))
        removed = clear_stale_cache(self)
        return {"tables_dropped": dropped, "vectors_deleted": vectors_deleted, "cache_files_removed": removed}

    # -------------------------------------------------------------------- read
    def load(self, model: str, dataset: str, layer: int | None = None, **kw: Any) -> Any:
        from embrm.store.loader import load

        return load(self, model, dataset, layer=layer, **kw)


def _schema_info(sch: pa.Schema) -> tuple[int, str, tuple[int, ...]]:
    layers = tuple(S.column_layer(f.name) for f in sch if f.name.startswith("layer_"))
    f = sch.field(S.layer_column(layers[0]))
    dim = f.type.list_size
    dtype = "float16" if f.type.value_type == pa.float16() else "float32"
    return dim, dtype, layers


def _match(entries: list[Entry], key: str, hash_attr: str, name_attr: str, what: str) -> list[Entry]:
    """Entries whose name equals ``key``, else whose hash starts with it; one hash only."""
    by_name = [e for e in entries if getattr(e, name_attr) == key]
    if by_name:
        return by_name
    hits = [e for e in entries if key and getattr(e, hash_attr).startswith(key.lower())]
    if not hits:
        raise EmbrmError(f"unknown {what} key {key!r}: `embrm store ls` lists names and hashes")
    if len({getattr(e, hash_attr) for e in hits}) > 1:
        raise EmbrmError(
            f"{what} key {key!r} is ambiguous ({len({getattr(e, hash_attr) for e in hits})} matches); "
            "use a longer hash prefix"
        )
    return hits


def _chunks(it: Iterable[T], n: int) -> Iterator[list[T]]:
    buf: list[T] = []
    for x in it:
        buf.append(x)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf


def open_store(uri: str | os.PathLike[str] | None = None, create: bool = False,
               storage_options: dict[str, str] | None = None) -> Store:
    """Open the store at ``uri`` (default ``$EMBRM_STORE`` or ``./embrm-store``).

    With ``create=True`` a missing or empty location becomes a new store. A location that
    holds something other than an embrm store is refused either way, so embrm never
    writes into someone else's data.
    """
    uri = str(uri) if uri is not None else default_store_uri()
    if not is_remote(uri):
        p = Path(uri.removeprefix("file://"))
        if p.exists() and not p.is_dir():
            raise EmbrmError(f"{uri} is a file, not an embrm store; pass --store with a directory")
        if not p.exists() and not create:
            raise EmbrmError(f"no embrm store at {uri}; run `embrm extract` to create one, or pass --store")
        # another process may be creating this store right now: its catalog appears first
        being_created = {f"{S.CATALOG_TABLE}.lance", f"{S.META_TABLE}.lance"}
        if p.is_dir() and not (p / f"{S.META_TABLE}.lance").exists() and \
                any(c.name not in being_created for c in p.iterdir()):
            raise EmbrmError(f"{uri} is not an embrm store (no {S.META_TABLE} table); pass --store with an embrm store")
        if create:
            p.mkdir(parents=True, exist_ok=True)
    db = lancedb.connect(uri, storage_options=storage_options) if storage_options else lancedb.connect(uri)
    store = Store(uri, db, storage_options)
    names = store._names()
    if S.META_TABLE not in names:
        if names - {S.CATALOG_TABLE}:  # a catalog alone is a creation cut short: finish it
            raise EmbrmError(f"{uri} is not an embrm store (no {S.META_TABLE} table); pass --store with an embrm store")
        if not create:
            raise EmbrmError(f"no embrm store at {uri}; run `embrm extract` to create one, or pass --store")
        meta = pa.Table.from_pylist(
            [{"key": "format_version", "value": str(S.FORMAT_VERSION)}, {"key": "created_by", "value": __version__}],
            schema=S.META_SCHEMA,
        )
        db.create_table(S.CATALOG_TABLE, schema=S.CATALOG_SCHEMA, exist_ok=True)
        try:
            db.create_table(S.META_TABLE, data=meta)
        except Exception:
            if S.META_TABLE not in store._names():
                raise
    else:
        fmt = {r["key"]: r["value"] for r in store.table(S.META_TABLE).to_arrow().to_pylist()}
        if int(fmt.get("format_version", "0")) > S.FORMAT_VERSION:
            raise EmbrmError(
                f"store {uri} has format {fmt.get('format_version')}, newer than this embrm "
                f"({__version__}) reads; upgrade embrm"
            )
    return store
