"""The embedding store: a LanceDB database on local disk or object storage, or the store
of an ``embrm serve`` process. Knows nothing of torch or transformers.

``open_store(uri)`` picks the backend; every backend answers :class:`Store`.

The names below are imported when first asked for (PEP 562), so importing a light
module of the package (``embrm.store.option``, which every command's ``--store`` uses)
does not import pyarrow and Lance: ``embrm --help`` stays fast. No module of the package
is named like one of these names (``export`` lives in ``exporting``): once imported, a
submodule would shadow the name of the same spelling.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from embrm.store.backends import open_store
    from embrm.store.base import Store
    from embrm.store.catalog import Entry
    from embrm.store.exporting import export
    from embrm.store.keys import DatasetHasher, ModelFingerprint, item_key
    from embrm.store.lance_store import LanceStore, LocalStore, ObjectStore
    from embrm.store.loader import Embeddings, EntryBatch
    from embrm.store.location import default_store_uri
    from embrm.store.rows import row_batches
    from embrm.store.service import ServiceStore
    from embrm.store.vector_tables import StoredVectors
    from embrm.store.vectors import VectorInfo, build_vector_table

_WHERE = {
    "open_store": "backends", "Store": "base", "Entry": "catalog", "export": "exporting", "DatasetHasher": "keys",
    "ModelFingerprint": "keys", "item_key": "keys", "LanceStore": "lance_store", "LocalStore": "lance_store",
    "ObjectStore": "lance_store", "Embeddings": "loader", "EntryBatch": "loader", "default_store_uri": "location",
    "row_batches": "rows", "ServiceStore": "service", "StoredVectors": "vector_tables", "VectorInfo": "vectors",
    "build_vector_table": "vectors",
}

__all__ = [
    "DatasetHasher",
    "Embeddings",
    "Entry",
    "EntryBatch",
    "LanceStore",
    "LocalStore",
    "ModelFingerprint",
    "ObjectStore",
    "ServiceStore",
    "Store",
    "StoredVectors",
    "VectorInfo",
    "build_vector_table",
    "default_store_uri",
    "export",
    "item_key",
    "open_store",
    "row_batches",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'embrm.store' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"embrm.store.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
