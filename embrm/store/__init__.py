"""The embedding store: a LanceDB database on local disk or object storage, or the store
of an ``embrm serve`` process. Knows nothing of torch or transformers.

``open_store(uri)`` picks the backend; every backend answers :class:`Store`.
"""
from embrm.store.backends import open_store
from embrm.store.base import Store
from embrm.store.catalog import Entry
from embrm.store.export import export
from embrm.store.keys import DatasetHasher, ModelFingerprint, item_key
from embrm.store.lance_store import LanceStore, LocalStore, ObjectStore
from embrm.store.loader import Embeddings, EntryBatch
from embrm.store.location import default_store_uri
from embrm.store.rows import row_batches
from embrm.store.service import ServiceStore
from embrm.store.vector_tables import StoredVectors
from embrm.store.vectors import VectorInfo, build_vector_table

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
