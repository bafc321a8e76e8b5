"""The one interface every store answers, wherever it lives.

:func:`embrm.store.backends.open_store` turns a URI into one of three backends, as
LanceDB's ``connect()`` returns a local or a remote connection:

* :class:`~embrm.store.lance_store.LocalStore`: a directory (file locks, checked appends,
  direct page reads);
* :class:`~embrm.store.lance_store.ObjectStore`: an object-store prefix (conditional-put
  commits, primary-key merges, Lance's reader);
* :class:`~embrm.store.service.ServiceStore`: an ``embrm serve`` process over HTTP
  (torch-free).

Commands and the Python API take any of them through :class:`Store`. What a backend
cannot do it refuses itself, in one line that names it (:meth:`Store.refuse`), so no
caller tests a URI.

Writing has its own small protocol here, so no caller outside ``store/`` reaches into a
backend's parts. An extraction (or a copy of entries between stores) is:

1. :meth:`Store.write_rows` the dataset's rows table (a no-op when it exists), and
   :meth:`Store.begin_entry` (the entry is ``partial`` from now on);
2. :meth:`Store.missing_keys`: the distinct item keys without a vector;
3. :meth:`Store.commit_vectors`, one window at a time, each a table built by the pure
   :func:`~embrm.store.vectors.build_vector_table` (idempotent: a key already stored is
   never stored twice, so a re-run or a second writer is safe);
4. :meth:`Store.finish_entry`: count, set the status, compact.

The reads a writer needs beside them are :meth:`Store.has_rows`, :meth:`Store.iter_rows`,
:meth:`Store.vector_info` and :meth:`Store.read_vectors` (point reads by key). Which
engines may extract into a store is the store's answer (:meth:`Store.extraction_engines`),
not its type. The distributed engine's fragments (write uncommitted, commit once, on the
driver) are the last section: a backend without them refuses.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from embrm.errors import EmbrmError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from embrm.store.catalog import Entry
    from embrm.store.loader import Embeddings, EntryBatch
    from embrm.store.vector_tables import StoredVectors
    from embrm.store.vectors import VectorInfo

#: Engines that compute vectors in this process (or its Ray cluster) and write them
#: through the protocol; a store that computes its own vectors answers ``("service",)``.
WRITES_HERE = ("local", "ray")
NOT_HERE = "it needs a store this process writes itself: a local path or object storage"


class Store(ABC):
    """An embrm store: its catalog of entries, their vectors, and the reward models
    published into it. Get one with :func:`embrm.store.open_store`."""

    #: What kind of place this is, for messages ("local disk", "object storage", "service").
    backend: ClassVar[str]
    uri: str

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    def refuse(self, what: str, hint: str) -> NoReturn:
        """The one-line error for something this backend cannot do."""
        raise EmbrmError(f"{what} is not possible on a store on {self.backend} ({self.uri}): {hint}")

    # -------------------------------------------------------------- catalog
    @abstractmethod
    def entries(self) -> list[Entry]:
        """Every (model, dataset) entry, oldest first."""

    @abstractmethod
    def resolve(self, model: str, dataset: str) -> Entry:
        """One entry by readable name, full hash or unique hash prefix of each key."""

    # ---------------------------------------------------------------- reads
    @abstractmethod
    def load(self, model: str, dataset: str, layer: int | None = None, *, mmap: bool = False,
             allow_partial: bool = False, use_cache: bool | None = None) -> Embeddings:
        """One entry's vectors and rows in dataset order, in memory."""

    @abstractmethod
    def iter_entry(self, model: str, dataset: str, layer: int | None = None, batch_size: int = 8192,
                   columns: list[str] | None = None, allow_partial: bool = False, offset: int = 0,
                   limit: int | None = None) -> Iterator[EntryBatch]:
        """An entry in dataset order, ``batch_size`` rows at a time."""

    # -------------------------------------------------------------- changes
    @abstractmethod
    def delete(self, model: str, dataset: str) -> Entry:
        """Remove one entry from the catalog (``gc`` then frees its unshared vectors)."""

    @abstractmethod
    def gc(self) -> dict[str, int]:
        """Drop what no entry refers to and compact; returns what was removed."""

    # -------------------------------------------------------- reward models
    @abstractmethod
    def push_run(self, name: str, run_dir: Path, force: bool = False) -> dict[str, Any]:
        """Publish a trained reward-model run directory under ``name``."""

    @abstractmethod
    def runs(self) -> list[dict[str, Any]]:
        """The published reward-model runs (name, method, members, embedding fingerprint...)."""

    @abstractmethod
    def pull_run(self, name: str, out: Path) -> Path:
        """Write a published run's files into the directory ``out``."""

    def entry_provenance(self, model: str, dataset: str, ids: bool = False) -> dict[str, Any]:
        """How an entry's vectors were computed: ``{"provenance": [{id, vectors, facts}]}``
        (see :mod:`embrm.store.provenance`); with ``ids``, also ``"ids"``: key -> id."""
        self.refuse("reading provenance", "use a store on local disk, object storage or a service")

    # ------------------------------------------------------ writing: protocol
    def extraction_engines(self) -> tuple[str, ...]:
        """The engines that may extract into this store: ``local`` and ``ray`` compute here
        and write through this protocol; ``service`` means the store computes its own."""
        return ()

    def check_engine(self, engine: str, purpose: str) -> None:
        """Refuse ``purpose`` in one line unless ``engine`` may extract into this store."""
        if engine not in self.extraction_engines():
            self.refuse(purpose, NOT_HERE)

    def write_rows(self, dataset_hash: str, batches: Iterable[pa.RecordBatch], n_rows: int, kind: str) -> None:
        """Write a dataset's rows table from record batches of the row schema
        (:data:`~embrm.store.schema.ROW_SCHEMA`: position and item key included), in
        chunks, idempotently; a no-op when the table holds its ``n_rows`` rows already."""
        self.refuse("writing a dataset's rows", NOT_HERE)

    def has_rows(self, dataset_hash: str) -> bool:
        """Whether the dataset's rows table is here."""
        self.refuse("asking for a dataset's rows", NOT_HERE)

    def iter_rows(self, dataset_hash: str, columns: list[str] | None = None, batch_size: int = 4096,
                  offset: int = 0, limit: int | None = None) -> Iterator[pa.RecordBatch]:
        """A dataset's rows in dataset order, ``batch_size`` at a time; ``offset`` and
        ``limit`` select a range of that order."""
        self.refuse("reading a dataset's rows", NOT_HERE)

    def begin_entry(self, model_hash: str, model_name: str, model_config: dict[str, Any], dataset_hash: str,
                    dataset_name: str, dataset_source: dict[str, Any], kind: str, n_rows: int) -> None:
        """Record that an extraction of this (model, dataset) has started (status partial)."""
        self.refuse("opening an entry", NOT_HERE)

    def missing_keys(self, model_hash: str, keys: pa.Array | pa.ChunkedArray) -> pa.Array:
        """The distinct ``keys`` without a vector under this model, in first-seen order."""
        self.refuse("asking which vectors are missing", NOT_HERE)

    def read_vectors(self, model_hash: str, keys: list[str], layers: Iterable[int] | None = None
                     ) -> StoredVectors:
        """Point reads: the stored vectors of ``keys`` (``found`` False for the others)."""
        self.refuse("reading vectors by key", NOT_HERE)

    def vector_info(self, model_hash: str) -> VectorInfo | None:
        """Dim, dtype and layers of a model's vectors, or None if it has none here yet."""
        self.refuse("asking for a model's vector table", NOT_HERE)

    def commit_vectors(self, model_hash: str, table: pa.Table) -> int:
        """One window of vectors, built by :func:`~embrm.store.vectors.build_vector_table`,
        as one commit. Idempotent: a key already stored is never stored twice. Returns
        the rows added."""
        self.refuse("writing vectors", NOT_HERE)

    def finish_entry(self, model_hash: str, dataset_hash: str) -> Entry:
        """Count what is stored for the entry, set its status (complete when every row has
        a vector) and compact."""
        self.refuse("finishing an entry", NOT_HERE)

    # ------------------------------------------------- writing: the service's
    def entry(self, model_hash: str, dataset_hash: str) -> Entry | None:
        """The entry of these full hashes, or None."""
        self.refuse("looking an entry up by its hashes", NOT_HERE)

    def find_dataset(self, key: str) -> tuple[str, str | None] | None:
        """(full hash, kind) of the stored dataset a hash or unique prefix names, or None."""
        self.refuse("finding a dataset by hash", NOT_HERE)

    def table_versions(self, e: Entry) -> tuple[int, int]:
        """(vector table version, rows table version): what a cached load or an ETag keys on."""
        self.refuse("asking for table versions", NOT_HERE)

    def runs_version(self) -> int | None:
        """A number that changes whenever a run is pushed or replaced (None: no registry yet)."""
        self.refuse("watching the published runs", NOT_HERE)

    def has_run(self, name: str) -> bool:
        """Whether a reward model is published under ``name``."""
        self.refuse("asking for a published run", NOT_HERE)

    def push_run_files(self, name: str, files: dict[str, Any], force: bool = False, consume: bool = False
                       ) -> dict[str, Any]:
        """Publish a run given as ``{file name: bytes or buffer}`` (checked first, one
        commit); ``consume`` empties ``files`` once copied (an upload's memory map goes
        before the write)."""
        self.refuse("publishing a run's files", NOT_HERE)

    def run_files(self, name: str) -> dict[str, bytes]:
        """A published run's files, as pushed."""
        self.refuse("reading a published run's files", NOT_HERE)

    def record_served(self, model_hash: str, model_name: str, model_config: dict[str, Any], keys: list[str],
                      prompts: list[str], responses: list[str]) -> Entry:
        """Add items computed for ad-hoc requests (vectors committed already) to the
        model's ``served`` entry."""
        self.refuse("recording served items", NOT_HERE)

    # ---------------------------------------- writing: distributed fragments
    def stored_row_keys(self, dataset_hash: str, batch_size: int = 65536) -> Iterator[tuple[int, pa.Array]]:
        """(first offset, item keys) of a rows table in its stored order, a batch at a time."""
        self.refuse("reading a rows table by offset", NOT_HERE)

    def rows_version(self, dataset_hash: str) -> int:
        """The version of a dataset's rows table (workers read that version)."""
        self.refuse("asking for a rows table's version", NOT_HERE)

    def take_rows(self, dataset_hash: str, offsets: np.ndarray, columns: list[str], version: int | None = None
                  ) -> pa.Table:
        """Rows by their stored offsets (as :meth:`stored_row_keys` numbers them)."""
        self.refuse("reading rows by offset", NOT_HERE)

    def prepare_vectors(self, model_hash: str, info: VectorInfo) -> None:
        """Create a model's vector table before workers write fragments into it."""
        self.refuse("writing vector fragments", NOT_HERE)

    def write_fragments(self, model_hash: str, table: pa.Table) -> list[str]:
        """Write vectors as uncommitted fragments (a worker's side); returns their metadata."""
        self.refuse("writing vector fragments", NOT_HERE)

    def commit_fragments(self, model_hash: str, fragments: list[str], keys: pa.Array) -> int:
        """Commit workers' fragments once, on the driver, checked against ``keys``; returns
        the rows added. Idempotent as :meth:`commit_vectors` is."""
        self.refuse("committing vector fragments", NOT_HERE)
