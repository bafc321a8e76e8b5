"""The LanceDB embedding store. Knows nothing of torch or transformers."""
from embrm.store.export import export
from embrm.store.keys import DatasetHasher, ModelFingerprint, item_key
from embrm.store.loader import Embeddings, load
from embrm.store.store import Entry, Store, default_store_uri, open_store

__all__ = [
    "DatasetHasher",
    "Embeddings",
    "Entry",
    "ModelFingerprint",
    "Store",
    "default_store_uri",
    "export",
    "item_key",
    "load",
    "open_store",
]
