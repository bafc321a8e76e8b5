"""The LanceDB embedding store. Knows nothing of torch or transformers."""
from embrm.store.export import export
from embrm.store.keys import DatasetHasher, ModelFingerprint, item_key
from embrm.store.loader import Embeddings, EntryBatch, iter_entry, load
from embrm.store.store import Entry, Store, StoredVectors, default_store_uri, open_store
from embrm.store.vectors import VectorInfo, build_vector_table

__all__ = [
    "DatasetHasher",
    "Embeddings",
    "Entry",
    "EntryBatch",
    "ModelFingerprint",
    "Store",
    "StoredVectors",
    "VectorInfo",
    "build_vector_table",
    "default_store_uri",
    "export",
    "item_key",
    "iter_entry",
    "load",
    "open_store",
]
