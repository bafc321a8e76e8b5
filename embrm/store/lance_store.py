"""The two backends that are Lance databases: a directory (:class:`LocalStore`) and an
object-store prefix (:class:`ObjectStore`).

A :class:`LanceStore` is its parts, each a module of its own and each given the tables
it works on:

* :attr:`~LanceStore.catalog` (:mod:`.catalog`): entries;
* :attr:`~LanceStore.rows` (:mod:`.rows`): datasets' rows tables;
* :attr:`~LanceStore.vectors` (:mod:`.vector_tables`) and :attr:`~LanceStore.writer`
  (:mod:`.vector_writes`): vector tables, read and written;
* :attr:`~LanceStore.reader` (:mod:`.loader`): whole and streamed loads;
* :attr:`~LanceStore.registry` (:mod:`.registry`): published reward models;
* maintenance (:mod:`.maintenance`): compaction and ``gc``.

Its own methods are :class:`~embrm.store.base.Store`'s interface, the write protocol
included (:meth:`write_rows`, :meth:`begin_entry`, :meth:`missing_keys`,
:meth:`commit_vectors`, :meth:`finish_entry`, the Ray engine's fragments): each is a
line or two over the parts, which no module outside ``store/`` touches.

The invariants: every write is a Lance commit (atomic: a crash leaves the table at the
previous version), done in chunks so a crash loses at most one chunk of work; no item
key is ever stored twice, whoever writes it (see :mod:`.vector_writes`); an entry is
``complete`` only when every row of its dataset has a vector.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from embrm import __version__
from embrm.errors import EmbrmError
from embrm.store import schema as S
from embrm.store.base import WRITES_HERE, Store
from embrm.store.cache import LoadCache
from embrm.store.catalog import HASH_CHARS, Catalog, Entry
from embrm.store.jobs import JobRecord, JobTable
from embrm.store.loader import EntryReader
from embrm.store.location import LOCAL, OBJECT, Location
from embrm.store.maintenance import compact, gc
from embrm.store.object_store import ObjectTables, storage_options
from embrm.store.provenance import entry_provenance
from embrm.store.registry import RunRegistry
from embrm.store.rows import DatasetRows
from embrm.store.served import record_served
from embrm.store.tables import LOCKS, SUFFIX, LocalTables, Tables
from embrm.store.vector_tables import VectorTables
from embrm.store.vector_writes import VectorWriter

if TYPE_CHECKING:
    import numpy as np

    from embrm.store.loader import Embeddings, EntryBatch
    from embrm.store.vector_tables import StoredVectors
    from embrm.store.vectors import VectorInfo

#: Up to this many distinct keys, :meth:`LanceStore.missing_keys` asks the key index
#: (which reads only fragments added since it last looked: a window's check costs its own
#: keys); more (a whole dataset's plan) are checked against one scan of the table's keys.
INDEX_KEYS = 65536


class LanceStore(Store):
    """A store that is a Lance database this process reads and writes itself."""

    def __init__(self, uri: str, tables: Tables, cache_by_default: bool):
        self.uri = uri
        self.tables = tables
        self.cache = LoadCache(uri)
        self.catalog = Catalog(tables, uri)
        self.rows = DatasetRows(tables, uri)
        self.vectors = VectorTables(tables, uri)
        self.writer = VectorWriter(tables, self.vectors)
        self.provenance = self.writer.provenance
        self.reader = EntryReader(self.rows, self.vectors, self.cache, cache_by_default)
        self.registry = RunRegistry(tables, uri)
        self._jobs = JobTable(tables)

    def extraction_engines(self) -> tuple[str, ...]:
        return WRITES_HERE

    @property
    def storage_options(self) -> dict[str, str]:
        return self.tables.storage_options

    # -------------------------------------------------------------- catalog
    def entries(self) -> list[Entry]:
        return self.catalog.entries()

    def resolve(self, model: str, dataset: str) -> Entry:
        return self.catalog.resolve(model, dataset)

    def entry(self, model_hash: str, dataset_hash: str) -> Entry | None:
        """The entry of these full hashes, or None."""
        return self.catalog.entry(model_hash, dataset_hash)

    def find_dataset(self, key: str) -> tuple[str, str | None] | None:
        """(full hash, kind) of the stored dataset ``key`` names, or None if there is none:
        ``key`` is its whole hash, or a unique prefix of at least 8 hex digits of one. Only
        real hashes match: those recorded with rows tables (or, for tables of an older
        embrm, in the catalog)."""
        key = key.lower()
        if not 8 <= len(key) <= HASH_CHARS or any(c not in "0123456789abcdef" for c in key):
            shown = key[:40] + ("..." if len(key) > 40 else "")
            raise EmbrmError(f"dataset {shown!r} is not a dataset hash: give its 64 hex digits or a unique prefix of "
                             "at least 8")
        known: dict[str, str | None] = {e.dataset_hash: e.kind for e in self.catalog.entries()}
        for name in self.tables.names():
            if name.startswith("ds_") and name[3:].startswith(key[:S.NAME_CHARS]):
                full, kind = self.rows.recorded(name[3:]) or (None, None)
                if full is not None:
                    known[full] = kind or known.get(full)
        hits = [(h, k) for h, k in known.items() if h.startswith(key) and self.rows.has(h)]
        if not hits:
            return None
        if len(hits) > 1:
            raise EmbrmError(f"dataset prefix {key!r} is ambiguous ({len(hits)} datasets); give more digits")
        return hits[0]

    def begin_entry(self, model_hash: str, model_name: str, model_config: dict[str, Any], dataset_hash: str,
                    dataset_name: str, dataset_source: dict[str, Any], kind: str, n_rows: int) -> None:
        """Record that an extraction of this (model, dataset) has started (status partial)."""
        self.catalog.begin(model_hash, model_name, model_config, dataset_hash, dataset_name, dataset_source, kind,
                           n_rows)

    # ---------------------------------------------------- the write protocol
    def write_rows(self, dataset_hash: str, batches: Iterable[pa.RecordBatch], n_rows: int, kind: str) -> None:
        self.rows.write(dataset_hash, batches, n_rows, kind)

    def has_rows(self, dataset_hash: str) -> bool:
        return self.rows.has(dataset_hash)

    def iter_rows(self, dataset_hash: str, columns: list[str] | None = None, batch_size: int = 4096,
                  offset: int = 0, limit: int | None = None) -> Iterator[pa.RecordBatch]:
        return self.rows.iter(dataset_hash, columns, batch_size, offset, limit)

    def missing_keys(self, model_hash: str, keys: pa.Array | pa.ChunkedArray) -> pa.Array:
        uniq = pc.unique(keys)
        if isinstance(uniq, pa.ChunkedArray):
            uniq = uniq.combine_chunks()
        if len(uniq) > INDEX_KEYS:
            return self.vectors.missing(model_hash, uniq)
        ds = self.vectors.open(model_hash)
        if ds is None or len(uniq) == 0:
            return uniq
        return uniq.filter(pa.array(~self.vectors.stored(model_hash, ds, uniq.to_pylist())))

    def read_vectors(self, model_hash: str, keys: list[str], layers: Iterable[int] | None = None
                     ) -> StoredVectors:
        return self.vectors.point_read(model_hash, keys, layers)

    def vector_info(self, model_hash: str) -> VectorInfo | None:
        return self.vectors.info(model_hash)

    def commit_vectors(self, model_hash: str, table: pa.Table) -> int:
        return self.writer.commit(model_hash, table)

    def runs_version(self) -> int | None:
        return self.registry.version()

    def has_run(self, name: str) -> bool:
        return self.registry.has(name)

    def push_run_files(self, name: str, files: dict[str, Any], force: bool = False, consume: bool = False
                       ) -> dict[str, Any]:
        return self.registry.push_files(name, files, force, consume)

    def run_files(self, name: str) -> dict[str, bytes]:
        return self.registry.files(name)

    def record_served(self, model_hash: str, model_name: str, model_config: dict[str, Any], keys: list[str],
                      prompts: list[str], responses: list[str]) -> Entry:
        return record_served(self, model_hash, model_name, model_config, keys, prompts, responses)

    # -------------------------------------------- the Ray engine's fragments
    def stored_row_keys(self, dataset_hash: str, batch_size: int = 65536) -> Iterator[tuple[int, pa.Array]]:
        return self.rows.physical_keys(dataset_hash, batch_size)

    def rows_version(self, dataset_hash: str) -> int:
        return self.rows.version(dataset_hash)

    def take_rows(self, dataset_hash: str, offsets: np.ndarray, columns: list[str], version: int | None = None
                  ) -> pa.Table:
        return self.rows.take(dataset_hash, offsets, columns, version)

    def prepare_vectors(self, model_hash: str, info: VectorInfo) -> None:
        self.writer.ensure_table(model_hash, info)

    def write_fragments(self, model_hash: str, table: pa.Table) -> list[str]:
        return self.writer.write_fragments(model_hash, table)

    def commit_fragments(self, model_hash: str, fragments: list[str], keys: pa.Array) -> int:
        return self.writer.commit_fragments(model_hash, fragments, keys)

    def finish_entry(self, model_hash: str, dataset_hash: str, compact_vectors: bool = True) -> Entry:
        """Count what is stored for the entry, set its status, and compact its vector table.

        ``rows`` counts stored vectors of the dataset's rows (a pair counts as two).
        Compaction here keeps many small chunk commits from fragmenting the table.
        """
        e = self.catalog.entry(model_hash, dataset_hash)
        if e is None:
            raise EmbrmError(f"no entry for model {model_hash[:12]} and dataset {dataset_hash[:12]}")
        keys = self.rows.keys(dataset_hash)
        info = self.vectors.info(model_hash)
        fields: dict[str, Any] = {"rows": 0, "truncated": 0}
        if info is not None:  # one scan gives both presence and truncation flags
            vt = self.vectors.keys(model_hash, ("truncated",))
            idx = pc.index_in(keys, value_set=vt.column("item_key").combine_chunks())
            fields["rows"] = len(keys) - idx.null_count
            fields["truncated"] = int(pc.sum(pc.take(vt.column("truncated"), pc.drop_null(idx))).as_py() or 0)
            fields.update(dim=info.dim, dtype=info.dtype, layers=json.dumps(list(info.layers)))
        fields["status"] = "complete" if fields["rows"] == e.n_rows else "partial"
        e = self.catalog.update(model_hash, dataset_hash, **fields)
        if compact_vectors:
            compact(self.tables, S.vector_table(model_hash))
        return e

    def entry_provenance(self, model: str, dataset: str, ids: bool = False) -> dict[str, Any]:
        return entry_provenance(self, self.resolve(model, dataset), ids)

    def table_versions(self, e: Entry) -> tuple[int, int]:
        """(vector table version, rows table version): what a cached load or an ETag keys on."""
        return self.reader.versions(e)

    # ---------------------------------------------------------------- reads
    def load(self, model: str, dataset: str, layer: int | None = None, *, mmap: bool = False,
             allow_partial: bool = False, use_cache: bool | None = None) -> Embeddings:
        """One entry's vectors and rows in dataset order (see :meth:`EntryReader.load`)."""
        return self.reader.load(self.resolve(model, dataset), layer, mmap, allow_partial, use_cache)

    def iter_entry(self, model: str, dataset: str, layer: int | None = None, batch_size: int = 8192,
                   columns: list[str] | None = None, allow_partial: bool = False, offset: int = 0,
                   limit: int | None = None) -> Iterator[EntryBatch]:
        """An entry in dataset order, ``batch_size`` rows at a time (see :meth:`EntryReader.iter`)."""
        return self.reader.iter(self.resolve(model, dataset), layer, batch_size, columns, allow_partial, offset,
                                limit)

    # -------------------------------------------------------------- changes
    def delete(self, model: str, dataset: str) -> Entry:
        """Remove one entry from the catalog. Its vectors stay until ``gc``, since other
        datasets may share them."""
        e = self.resolve(model, dataset)
        self.catalog.remove(e)
        return e

    def gc(self) -> dict[str, int]:
        """See :func:`embrm.store.maintenance.gc`."""
        return gc(self.tables, self.catalog, self.rows, self.vectors, self.reader, self.cache,
                  keep=self.registry.tables_used() | self._jobs.tables_used())

    # ----------------------------------------------------------- service jobs
    def job(self, job_id: str) -> JobRecord | None:
        """A service's dataset job as the store records it (its latest epoch), or None."""
        return self._jobs.current(job_id)

    def jobs(self) -> list[JobRecord]:
        """Every recorded dataset job's latest epoch, newest first (see :mod:`.jobs`)."""
        return self._jobs.all()

    def claim_job(self, rec: JobRecord) -> bool:
        """Take a turn at running a job: True for exactly one of the replicas that claim
        the same epoch at once."""
        return self._jobs.claim(rec)

    def update_job(self, rec: JobRecord) -> bool:
        """A heartbeat of the job's owner (progress, state, lease); False if it lost the job."""
        return self._jobs.update(rec)

    # -------------------------------------------------------- reward models
    def push_run(self, name: str, run_dir: Path, force: bool = False) -> dict[str, Any]:
        return self.registry.push(name, run_dir, force)

    def runs(self) -> list[dict[str, Any]]:
        return self.registry.list()

    def pull_run(self, name: str, out: Path) -> Path:
        return self.registry.pull(name, out)

    # --------------------------------------------------------------- create
    @classmethod
    def _init_or_check(cls, store: LanceStore, create: bool) -> LanceStore:
        """Check the store's format, or make a new store's meta table and catalog."""
        meta = store.tables.open(S.META_TABLE)
        if meta is not None:
            fmt = {r["key"]: r["value"] for r in meta.to_table().to_pylist()}
            if int(fmt.get("format_version", "0")) > S.FORMAT_VERSION:
                raise EmbrmError(f"store {store.uri} has format {fmt.get('format_version')}, newer than this embrm "
                                 f"({__version__}) reads; upgrade embrm")
            return store
        if not create:
            raise EmbrmError(f"no embrm store at {store.uri}; run `embrm extract` to create one, or pass --store")
        store.tables.create(S.CATALOG_TABLE, S.CATALOG_SCHEMA)
        rows = pa.Table.from_pylist(
            [{"key": "format_version", "value": str(S.FORMAT_VERSION)}, {"key": "created_by", "value": __version__}],
            schema=S.META_SCHEMA)
        store.tables.create(S.META_TABLE, S.META_SCHEMA, rows)
        return store


def not_a_store(uri: str) -> EmbrmError:
    return EmbrmError(f"{uri} is not an embrm store (no {S.META_TABLE} table); pass --store with an embrm store")


class LocalStore(LanceStore):
    """A store in a directory on local disk."""

    backend: ClassVar[str] = LOCAL

    @classmethod
    def open(cls, loc: Location, create: bool = False) -> LocalStore:
        """The store at a local path; with ``create`` a missing or empty directory becomes one.
        A directory holding anything else is refused, so embrm never writes into someone
        else's data."""
        p = loc.path
        if p.exists() and not p.is_dir():
            raise EmbrmError(f"{loc.uri} is a file, not an embrm store; pass --store with a directory")
        if not p.exists() and not create:
            raise EmbrmError(f"no embrm store at {loc.uri}; run `embrm extract` to create one, or pass --store")
        # another process may be creating this store right now: its catalog appears first
        being_created = {f"{S.CATALOG_TABLE}{SUFFIX}", f"{S.META_TABLE}{SUFFIX}", LOCKS}
        if p.is_dir() and not (p / f"{S.META_TABLE}{SUFFIX}").exists() and \
                any(c.name not in being_created for c in p.iterdir()):
            raise not_a_store(loc.uri)
        if create:
            p.mkdir(parents=True, exist_ok=True)
        store = cls(loc.uri, LocalTables(loc.uri), cache_by_default=True)
        return cls._init_or_check(store, create)  # type: ignore[return-value]


class ObjectStore(LanceStore):
    """A store under an object-store prefix (``s3://bucket/prefix``)."""

    backend: ClassVar[str] = OBJECT

    @classmethod
    def open(cls, loc: Location, create: bool = False, options: dict[str, str] | None = None) -> ObjectStore:
        """The store under an object-store prefix, configured from the AWS environment;
        with ``create`` an empty prefix becomes one. A prefix holding other tables is
        refused."""
        assert loc.kind == OBJECT
        store = cls(loc.uri, ObjectTables(loc.uri, storage_options(loc.scheme, options)), cache_by_default=False)
        if store.tables.open(S.META_TABLE) is None and create and \
                store.tables.names() - {S.CATALOG_TABLE, S.META_TABLE}:
            raise not_a_store(loc.uri)
        return cls._init_or_check(store, create)  # type: ignore[return-value]
