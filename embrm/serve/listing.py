"""One page of the catalog: ``GET /v1/entries?q=&sort=&order=&offset=&limit=``.

A store may hold thousands of entries; the page (and any client) asks for one screenful
at a time, filtered and sorted here, so the browser never holds or sorts the whole
catalog. The catalog itself is one small Lance table read whole; what is saved is the
JSON, the transfer and the browser's DOM.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from embrm.store.catalog import Entry

#: Bytes per stored value of each vector dtype (a store keeps float32 or float16).
ITEMSIZE = {"float16": 2, "float32": 4}


def vector_bytes(e: Entry) -> int:
    """What an entry's vectors take, uncompressed: rows x layers x dim x item size. Items
    are shared between datasets of one model, so this is the entry's share, not disk."""
    return e.rows * max(1, len(e.layers)) * e.dim * ITEMSIZE.get(e.dtype, 4)


SORTS: dict[str, Callable[[Entry], Any]] = {
    "model": lambda e: (e.model_name.lower(), e.model_hash),
    "dataset": lambda e: (e.dataset_name.lower(), e.dataset_hash),
    "kind": lambda e: e.kind,
    "rows": lambda e: e.rows,
    "dim": lambda e: e.dim,
    "dtype": lambda e: e.dtype,
    "status": lambda e: e.status,
    "truncated": lambda e: e.truncated,
    "size": vector_bytes,
    "created_at": lambda e: e.created_at,
    "updated_at": lambda e: e.updated_at,
}
Sort = Literal["model", "dataset", "kind", "rows", "dim", "dtype", "status", "truncated", "size", "created_at",
               "updated_at"]
assert set(Sort.__args__) == set(SORTS)  # the route's choices are the sort keys


def matches(e: Entry, q: str) -> bool:
    """Whether a filter text (case-insensitive) is in any name, kind, status or dtype, or
    starts a model or dataset hash."""
    q = q.strip().lower()
    words = (e.model_name, e.dataset_name, e.kind, e.status, e.dtype)
    return any(q in w.lower() for w in words) or e.model_hash.startswith(q) or e.dataset_hash.startswith(q)


def select(entries: list[Entry], q: str | None, sort: str | None, descending: bool, offset: int,
           limit: int | None) -> tuple[list[Entry], int]:
    """The entries of one page and how many matched the filter in all. Without ``sort``
    the catalog's own order (oldest first) is kept; ties keep it too (a stable sort)."""
    found = [e for e in entries if matches(e, q)] if q else list(entries)
    if sort is not None:
        found.sort(key=SORTS[sort], reverse=descending)
    elif descending:
        found.reverse()
    end = None if limit is None else offset + limit
    return found[offset:end], len(found)
