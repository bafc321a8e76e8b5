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
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from embrm.errors import EmbrmError

if TYPE_CHECKING:
    from embrm.store.catalog import Entry
    from embrm.store.lance_store import LanceStore
    from embrm.store.loader import Embeddings, EntryBatch


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

    # ------------------------------------------------------------ front ends
    def writable(self, purpose: str) -> LanceStore:
        """This store as one that takes vector writes from this process (the extraction
        seams); a backend that cannot refuses, naming ``purpose``."""
        self.refuse(purpose, "it needs a store this process writes itself: a local path or object storage")
