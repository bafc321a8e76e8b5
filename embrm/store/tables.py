"""The Lance datasets that make up a store: where they live, opening, creating, listing.

A store is a directory or object-store prefix of Lance datasets named ``<table>.lance``:
the layout of a LanceDB database, so ``lancedb.connect(uri)`` opens an embrm store too.
embrm itself talks to pylance directly, for two reasons:

* importing ``lancedb`` costs about 1.5 s (its REST-namespace client), which every
  ``embrm store ...`` command would pay; ``lance`` alone is a fraction of that;
* the Ray engine needs pylance's own fragment-write and commit calls, so the store
  speaks the same API everywhere instead of two.

Lance commits are optimistic: two writers that commit at once may see a conflict, and
the loser retries on the new version (:func:`retry`).
"""
from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa

from embrm.errors import EmbrmError

if TYPE_CHECKING:
    import lance

T = TypeVar("T")


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


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


class Tables:
    """The Lance datasets under one store URI."""

    SUFFIX = ".lance"

    def __init__(self, uri: str, storage_options: dict[str, str] | None = None):
        self.uri = uri.rstrip("/")
        self.storage_options = dict(storage_options or {})

    def path(self, name: str) -> str:
        """The dataset URI of a table."""
        return f"{self.uri}/{name}{self.SUFFIX}"

    def exists(self, name: str) -> bool:
        if not is_remote(self.uri):
            return (local_path(self.path(name)) / "_versions").is_dir()
        return self.open(name) is not None

    def open(self, name: str, version: int | None = None) -> lance.LanceDataset | None:
        """The table at its latest (or given) version, or None if it does not exist."""
        import lance

        if not is_remote(self.uri) and not (local_path(self.path(name)) / "_versions").is_dir():
            return None
        try:
            return lance.dataset(self.path(name), version=version, storage_options=self.storage_options or None)
        except (ValueError, OSError) as e:  # lance: "Dataset at path ... was not found"
            self._explain(e)
            if "not found" in str(e).lower():
                return None
            raise

    def get(self, name: str, version: int | None = None) -> lance.LanceDataset:
        ds = self.open(name, version)
        if ds is None:
            raise EmbrmError(f"table {name} is missing from the store at {self.uri}")
        return ds

    def create(self, name: str, schema: pa.Schema, data: pa.Table | None = None) -> lance.LanceDataset:
        """Create a table (empty, or with ``data``); if another writer created it first, open it."""
        import lance

        try:
            return lance.write_dataset(data if data is not None else schema.empty_table(), self.path(name),
                                       schema=schema, mode="create",
                                       storage_options=self.storage_options or None)
        except (OSError, ValueError) as e:
            self._explain(e)
            if "already exists" not in str(e).lower():
                raise
        return self.get(name)

    def names(self) -> set[str]:
        """Every table of the store (a listing: only ``gc`` needs it)."""
        if not is_remote(self.uri):
            root = local_path(self.uri)
            if not root.is_dir():
                return set()
            return {p.name[: -len(self.SUFFIX)] for p in root.iterdir()
                    if p.name.endswith(self.SUFFIX) and (p / "_versions").is_dir()}
        import pyarrow.fs as pafs

        fs, base = _remote_fs(self)
        try:
            infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        except OSError as e:
            self._explain(e)
            raise
        return {i.base_name[: -len(self.SUFFIX)] for i in infos
                if i.type == pafs.FileType.Directory and i.base_name.endswith(self.SUFFIX)}

    def _explain(self, e: BaseException) -> None:
        """Raise a one-line error for an object store's failure (bucket, credentials, network)."""
        if is_remote(self.uri):
            from embrm.store.remote import explain

            err = explain(e, self.uri)
            if err is not None:
                raise err from None

    def drop(self, name: str) -> None:
        if not is_remote(self.uri):
            shutil.rmtree(local_path(self.path(name)), ignore_errors=True)
            return
        import lance

        lance.LanceDataset.drop(self.path(name), storage_options=self.storage_options or None,
                                ignore_not_found=True)


def _remote_fs(t: Tables) -> tuple[Any, str]:
    """A pyarrow filesystem for listing an object-store prefix with the store's options."""
    import pyarrow.fs as pafs

    from embrm.store.remote import pyarrow_s3_options

    scheme, _, rest = t.uri.partition("://")
    if scheme not in ("s3", "s3a"):
        return pafs.FileSystem.from_uri(t.uri)
    return pafs.S3FileSystem(**pyarrow_s3_options(t.storage_options)), rest
