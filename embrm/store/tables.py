"""The Lance datasets that make up a store: where they live, opening, creating, listing,
and how writers take turns.

A store is a directory or object-store prefix of Lance datasets named ``<table>.lance``:
the layout of a LanceDB database, so ``lancedb.connect(uri)`` opens an embrm store too.
embrm itself talks to pylance directly, for two reasons:

* importing ``lancedb`` costs about 1.5 s (its REST-namespace client), which every
  ``embrm store ...`` command would pay; ``lance`` alone is a fraction of that;
* the Ray engine needs pylance's own fragment-write and commit calls, so the store
  speaks the same API everywhere instead of two.

:class:`Tables` is what both Lance backends share; :class:`LocalTables` (here) and
:class:`~embrm.store.object_store.ObjectTables` differ in how they list, drop and lock:

* **local disk**: ``merge_insert`` on an unmarked key does not keep keys unique (two
  processes that planned an insert on the same version were seen to insert a key
  twice), so check-and-insert commits take turns under ``flock`` on a file in
  ``<store>/_embrm_locks``; the kernel releases it when the holder dies, however it dies.
  Under that lock a writer is alone, so it may append after checking its keys
  (:attr:`Tables.exclusive_commits`);
* **object storage** has no such lock and needs none: every insert is a ``merge_insert``
  on a key field that carries Lance's primary-key marker, which Lance checks against
  every version committed since the insert was planned; the loser retries.

Lance commits are optimistic: two writers that commit at once may see a conflict, and
the loser retries on the new version (:func:`retry`).
"""
from __future__ import annotations

import contextlib
import fcntl
import random
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pyarrow as pa

from embrm.errors import EmbrmError

if TYPE_CHECKING:
    import lance

T = TypeVar("T")
SUFFIX = ".lance"
LOCKS = "_embrm_locks"


def retry(fn: Callable[[], T], tries: int = 30) -> T:
    """Run a commit again when it lost a race with another writer.

    Lance raises plain OSError/RuntimeError on commit conflicts; anything that does not
    say "conflict" or "retry" is a real error and is raised at once.
    """
    for attempt in range(tries):
        try:
            return fn()
        except Exception as e:
            msg = str(e).lower()
            if ("conflict" not in msg and "retry" not in msg) or attempt == tries - 1:
                raise
            time.sleep(0.02 * (1 + attempt) * (1 + random.random()))
    raise AssertionError("unreachable")


def merge(ds: lance.LanceDataset, on: str, data: pa.Table, update: bool = False) -> int:
    """``merge_insert`` of ``data`` on key ``on``: insert new keys (and with ``update``,
    replace existing ones); returns the rows inserted. Batches take the table's own
    schema, whose key field carries Lance's primary-key marker where embrm created it."""
    data = data.cast(ds.schema)

    def run() -> object:
        b = ds.merge_insert(on)
        if update:
            b = b.when_matched_update_all()
        return b.when_not_matched_insert_all().execute(data)

    res = retry(run)
    return int(res.get("num_inserted_rows", 0)) if isinstance(res, dict) else len(data)


def sql_str(s: str) -> str:
    """A string literal for a Lance filter."""
    return "'" + s.replace("'", "''") + "'"


class Tables(ABC):
    """The Lance datasets under one store URI."""

    #: A commit made under :meth:`lock` is the only one in progress (so a writer may check
    #: its keys against the table and then append).
    exclusive_commits: bool = False
    #: Vector pages may be read straight from the data files (:mod:`embrm.store.scan`).
    direct_reads: bool = False

    def __init__(self, uri: str, storage_options: dict[str, str] | None = None):
        self.uri = uri.rstrip("/")
        self.storage_options = dict(storage_options or {})

    def path(self, name: str) -> str:
        """The dataset URI of a table."""
        return f"{self.uri}/{name}{SUFFIX}"

    @property
    def lance_options(self) -> dict[str, str] | None:
        return self.storage_options or None

    def open(self, name: str, version: int | None = None) -> lance.LanceDataset | None:
        """The table at its latest (or given) version, or None if it does not exist."""
        import lance

        try:
            return lance.dataset(self.path(name), version=version, storage_options=self.lance_options)
        except (ValueError, OSError) as e:  # lance: "Dataset at path ... was not found"
            self.explain(e)
            if "not found" in str(e).lower():
                return None
            raise

    def get(self, name: str, version: int | None = None) -> lance.LanceDataset:
        ds = self.open(name, version)
        if ds is None:
            raise EmbrmError(f"table {name} is missing from the store at {self.uri}")
        return ds

    def create(self, name: str, schema: pa.Schema, data: pa.Table | None = None) -> lance.LanceDataset:
        """Create a table (empty, or with ``data``) as one commit; if another writer created
        it first, open theirs. Writers that create the same table at once (a team's first
        jobs on a new bucket) all end with the one table.

        Not ``write_dataset(mode="create")``: Lance rebases a create that lost the race for
        version 1 onto the winner's table as an overwrite at version 2 (lance#4451): an
        overwrite drops whatever another writer merged before it, and on S3 it made a
        concurrent writer's merge fail as an incompatible transaction. A commit
        with no retries cannot be rebased: exactly one creator gets version 1 and every
        other one fails and opens it (10 of 10 rounds of six racing creators, local and S3;
        ``mode="create"`` made two tables in 3 to 7 of 10).
        """
        import lance
        from lance import LanceOperation

        if (ds := self.open(name)) is not None:
            return ds
        try:
            fragments = [] if data is None or len(data) == 0 else lance.fragment.write_fragments(
                data.cast(schema), self.path(name), schema=schema, mode="create", storage_options=self.lance_options)
            return lance.LanceDataset.commit(self.path(name), LanceOperation.Overwrite(schema, fragments),
                                             max_retries=0, enable_v2_manifest_paths=True,
                                             storage_options=self.lance_options)
        except (OSError, ValueError, RuntimeError) as e:
            self.explain(e)
            for _ in range(50):  # the winner's commit may need a moment to show on object storage
                if (ds := self.open(name)) is not None:
                    return ds
                time.sleep(0.1)
            raise

    def append(self, name: str, data: pa.Table) -> None:
        """Append rows as one commit (callers hold :meth:`lock` and have checked the keys)."""
        import lance

        retry(lambda: lance.write_dataset(data, self.path(name), mode="append", storage_options=self.lance_options))

    def explain(self, e: BaseException) -> None:  # noqa: B027 (a hook: only object stores explain)
        """Raise a one-line error for a failure of the place itself (bucket, credentials,
        network); return for anything else."""

    @abstractmethod
    def names(self) -> set[str]:
        """Every table of the store (a listing)."""

    @abstractmethod
    def drop(self, name: str) -> None:
        """Delete a table and all its versions."""

    @abstractmethod
    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Take turns with other writers of table ``name`` (where the backend needs to)."""


class LocalTables(Tables):
    """Tables in a directory: listing by the file system, commits under ``flock``."""

    exclusive_commits = True
    direct_reads = True

    @property
    def root(self) -> Path:
        return Path(self.uri.removeprefix("file://"))

    def _dir(self, name: str) -> Path:
        return self.root / f"{name}{SUFFIX}"

    def open(self, name: str, version: int | None = None) -> lance.LanceDataset | None:
        if not (self._dir(name) / "_versions").is_dir():  # no Lance call for a table that is not there
            return None
        return super().open(name, version)

    def names(self) -> set[str]:
        if not self.root.is_dir():
            return set()
        return {p.name[: -len(SUFFIX)] for p in self.root.iterdir()
                if p.name.endswith(SUFFIX) and (p / "_versions").is_dir()}

    def drop(self, name: str) -> None:
        shutil.rmtree(self._dir(name), ignore_errors=True)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        d = self.root / LOCKS
        d.mkdir(exist_ok=True)
        with open(d / f"{name}.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
