"""Arrow schemas and table names of an embrm store.

A store is one LanceDB database (a folder of Lance datasets) holding:

* ``embrm_meta`` – one row naming the store format; its presence marks a store;
* ``catalog`` – one row per (model fingerprint, dataset fingerprint) entry;
* ``ds_<dataset hash>`` – the dataset's rows in order, with their structure and labels;
* ``vec_<model hash>`` – content-addressed vectors: one row per item key, one
  FixedSizeList column per extracted layer.

Datasets refer to items by key, so two datasets that share items share vectors.
"""
from __future__ import annotations

import hashlib

import pyarrow as pa

#: 2: vector tables made by this embrm carry a ``provenance`` column and the store a
#: ``provenance`` table (:mod:`embrm.store.provenance`). Format 1 stores still open and
#: read; their vector tables keep their schema and their rows have no provenance.
FORMAT_VERSION = 2
META_TABLE = "embrm_meta"
CATALOG_TABLE = "catalog"
NAME_CHARS = 24

#: Dataset kinds and the shapes they load into.
KINDS = ("pairwise", "multi", "pointwise")
#: Vector dtypes a store accepts.
VECTOR_DTYPES = ("float32", "float16")


def dataset_table(dataset_hash: str) -> str:
    return f"ds_{dataset_hash[:NAME_CHARS]}"


def vector_table(model_hash: str) -> str:
    return f"vec_{model_hash[:NAME_CHARS]}"


#: The readable name of the entry holding what ``embrm serve`` computed for ad-hoc requests.
SERVED_NAME = "served"


def served_dataset_hash(model_hash: str) -> str:
    """The key of a model's ``served`` rows table: fixed per model, not a content hash,
    because that table grows as the service answers requests."""
    return hashlib.sha256(f"embrm-served:{model_hash}".encode()).hexdigest()


def entry_id(model_hash: str, dataset_hash: str) -> str:
    """The catalog's key of a (model, dataset) entry."""
    return f"{model_hash}:{dataset_hash}"


def layer_column(layer: int) -> str:
    """Column name of one layer; SQL-safe (no minus sign)."""
    return f"layer_m{-layer}" if layer < 0 else f"layer_{layer}"


def column_layer(name: str) -> int:
    tail = name[len("layer_"):]
    return -int(tail[1:]) if tail.startswith("m") else int(tail)


META_SCHEMA = pa.schema([("key", pa.string()), ("value", pa.string())])

# Lance's own guard against concurrent writers: ``merge_insert`` on a column marked as an
# (unenforced) primary key records the keys it inserts, so two writers inserting the same
# key conflict and the loser re-runs its merge. Without it, two processes that merge the
# same new keys at once were seen to insert them twice, on local disks and on S3 alike.
PRIMARY_KEY = {"lance-schema:unenforced-primary-key": "true"}


def key_field(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False, metadata=PRIMARY_KEY)


CATALOG_SCHEMA = pa.schema(
    [
        key_field("entry_id", pa.string()),
        ("model_hash", pa.string()),
        ("model_name", pa.string()),
        ("model_config", pa.string()),
        ("dataset_hash", pa.string()),
        ("dataset_name", pa.string()),
        ("dataset_source", pa.string()),
        ("kind", pa.string()),
        ("n_rows", pa.int64()),
        ("rows", pa.int64()),
        ("dim", pa.int64()),
        ("dtype", pa.string()),
        ("layers", pa.string()),
        ("status", pa.string()),
        ("truncated", pa.int64()),
        ("created_at", pa.string()),
        ("updated_at", pa.string()),
        ("embrm_version", pa.string()),
    ]
)

ROW_SCHEMA = pa.schema(
    [
        key_field("position", pa.int64()),
        ("item_key", pa.string()),
        ("prompt_id", pa.int64()),
        ("response_index", pa.int32()),
        ("role", pa.string()),
        ("label", pa.float64()),
        ("reward", pa.float64()),
        ("prompt", pa.large_string()),
        ("response", pa.large_string()),
    ]
)


#: A row's structure and labels: what a load returns beside the vectors, in this order.
ROW_COLUMNS = ["item_key", "prompt_id", "response_index", "role", "label", "reward"]
#: A row's texts, read only when asked for (they are most of a rows table's bytes).
TEXT_COLUMNS = ["prompt", "response"]

#: The normalised rows a client uploads to the service: the row schema without what the
#: server derives itself (position and item key).
UPLOAD_SCHEMA = pa.schema([f for f in ROW_SCHEMA if f.name not in ("position", "item_key")])

#: The ``served`` rows table grows by item key, so that is its primary key.
SERVED_ROW_SCHEMA = pa.schema([pa.field("position", pa.int64(), nullable=False), key_field("item_key", pa.string()),
                               *[f for f in ROW_SCHEMA if f.name not in ("position", "item_key")]])


def vector_schema(dim: int, dtype: str, layers: tuple[int, ...], provenance: bool = True) -> pa.Schema:
    """The columns of a vector table: the item key, its token facts, one fixed-size list
    per layer and (unless an older embrm made the table) the row's provenance id."""
    value_type = pa.float16() if dtype == "float16" else pa.float32()
    fields = [
        key_field("item_key", pa.string()),
        pa.field("n_tokens", pa.int32()),
        pa.field("truncated", pa.bool_()),
    ]
    fields += [pa.field(layer_column(layer), pa.list_(value_type, dim)) for layer in layers]
    if provenance:
        fields.append(pa.field("provenance", pa.string()))
    return pa.schema(fields)
