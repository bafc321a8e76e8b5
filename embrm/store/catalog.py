"""The catalog: one row per (model fingerprint, dataset fingerprint) entry.

An entry says what was extracted (model and dataset names, hashes, configuration), how
far it got (``partial`` or ``complete``, rows with vectors, truncated items) and what
its vectors look like (dim, dtype, layers). Entries are found by readable name, full
hash or a unique prefix of a stored hash (:meth:`Catalog.resolve`).
"""
from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from embrm import __version__
from embrm.errors import EmbrmError
from embrm.store import schema as S
from embrm.store.tables import Tables, merge, retry, sql_str

if TYPE_CHECKING:
    import lance

HASH_CHARS = 64  # a model or dataset hash: sha256 in hex
NAME_MAX = 200  # characters of a dataset's readable name


def check_dataset_name(name: str) -> str:
    """A dataset's readable name: printable text of at most ``NAME_MAX`` characters, with
    no path separator (a name must work as one segment of a URL path) and no control
    character (names are printed and logged); one line saying which rule it breaks."""
    if not isinstance(name, str) or not name.strip():
        raise EmbrmError("a dataset name must be non-empty text")
    if len(name) > NAME_MAX:
        raise EmbrmError(f"dataset name {name[:40]!r}... has {len(name)} characters; at most {NAME_MAX} are allowed")
    bad = next((c for c in name if unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp")), None)
    if bad is not None:
        raise EmbrmError(f"dataset name {name[:60]!r} holds the control character U+{ord(bad):04X}; use printable text")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise EmbrmError(f"dataset name {name[:60]!r} holds a path separator ('/' or '\\'); use another character")
    return name


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


class Catalog:
    """The ``catalog`` table of one store."""

    def __init__(self, tables: Tables, where: str):
        self.tables, self.where = tables, where

    def _table(self) -> lance.LanceDataset:
        return self.tables.get(S.CATALOG_TABLE)

    def entries(self) -> list[Entry]:
        rows = [Entry.from_row(r) for r in self._table().to_table().to_pylist()]
        return sorted(rows, key=lambda e: (e.created_at, e.model_name, e.dataset_name))

    def row(self, model_hash: str, dataset_hash: str) -> dict[str, Any] | None:
        eid = S.entry_id(model_hash, dataset_hash)
        rows = self._table().to_table(filter=f"entry_id = {sql_str(eid)}").to_pylist()
        return rows[0] if rows else None

    def entry(self, model_hash: str, dataset_hash: str) -> Entry | None:
        """The entry of these full hashes, or None."""
        row = self.row(model_hash, dataset_hash)
        return Entry.from_row(row) if row else None

    def begin(self, model_hash: str, model_name: str, model_config: dict[str, Any], dataset_hash: str,
              dataset_name: str, dataset_source: dict[str, Any], kind: str, n_rows: int) -> None:
        """Record that an extraction of this (model, dataset) has started (status partial),
        unless the entry exists already."""
        if kind not in S.KINDS:
            raise EmbrmError(f"dataset kind {kind!r} is unknown; use one of {S.KINDS}")
        check_dataset_name(dataset_name)
        t = now()
        row = {
            "entry_id": S.entry_id(model_hash, dataset_hash), "model_hash": model_hash, "model_name": model_name,
            "model_config": json.dumps(model_config, sort_keys=True), "dataset_hash": dataset_hash,
            "dataset_name": dataset_name, "dataset_source": json.dumps(dataset_source, sort_keys=True),
            "kind": kind, "n_rows": n_rows, "rows": 0, "dim": 0, "dtype": "", "layers": "[]", "status": "partial",
            "truncated": 0, "created_at": t, "updated_at": t, "embrm_version": __version__,
        }
        with self.tables.lock(S.CATALOG_TABLE):  # check and insert as one step
            if self.row(model_hash, dataset_hash) is None:
                self._put(row)

    def update(self, model_hash: str, dataset_hash: str, **fields: Any) -> Entry:
        """Set fields of an existing entry (and its ``updated_at``)."""
        with self.tables.lock(S.CATALOG_TABLE):
            row = self.row(model_hash, dataset_hash)
            if row is None:
                raise EmbrmError(f"no entry for model {model_hash[:12]} and dataset {dataset_hash[:12]}")
            row.update(fields, updated_at=now())
            self._put(row)
        return Entry.from_row(row)

    def _put(self, row: dict[str, Any]) -> None:
        merge(self._table(), "entry_id", pa.Table.from_pylist([row], schema=S.CATALOG_SCHEMA), update=True)

    def remove(self, e: Entry) -> None:
        with self.tables.lock(S.CATALOG_TABLE):
            retry(lambda: self._table().delete(f"entry_id = {sql_str(e.id)}"))

    def resolve(self, model: str, dataset: str) -> Entry:
        """Find one entry by readable name, full hash or unique hash prefix of each key."""
        entries = self.entries()
        if not entries:
            raise EmbrmError(f"store {self.where} has no entries yet; run `embrm extract` first")
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
                f"no entry for model {model!r} and dataset {dataset!r} in {self.where}; "
                "`embrm store ls` lists the entries"
            ) from None
        return d[0]


def _match(entries: list[Entry], key: str, hash_attr: str, name_attr: str, what: str) -> list[Entry]:
    """Entries whose name equals ``key``, else whose hash starts with it (a prefix of at most
    a whole hash: anything longer names no hash); one hash only."""
    by_name = [e for e in entries if getattr(e, name_attr) == key]
    if by_name:
        return by_name
    prefix = key.lower()
    hits = [e for e in entries if 0 < len(prefix) <= HASH_CHARS and getattr(e, hash_attr).startswith(prefix)]
    if not hits:
        shown = key if len(key) <= 80 else key[:77] + "..."
        raise EmbrmError(f"unknown {what} key {shown!r}: `embrm store ls` lists names and hashes")
    n = len({getattr(e, hash_attr) for e in hits})
    if n > 1:
        raise EmbrmError(f"{what} key {key!r} is ambiguous ({n} matches); use a longer hash prefix")
    return hits
