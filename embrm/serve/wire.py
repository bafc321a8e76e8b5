"""What crosses the wire as Arrow: uploaded rows, pulled entries, native embed answers.

Server and client share these definitions, so a pulled entry has the same columns,
types and order as the store's own tables, and the client needs only pyarrow.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from embrm.store import schema as S

if TYPE_CHECKING:
    from embrm.serve.worker import ItemVectors
    from embrm.store.store import Entry, Store

ROW_COLUMNS = ["position", "item_key", "prompt_id", "response_index", "role", "label", "reward"]
TEXT_COLUMNS = ["prompt", "response"]
ENTRY_KEY = b"embrm.entry"  # schema metadata: the entry's summary (JSON)


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def entry_json(e: Entry) -> dict[str, Any]:
    return {**e.summary(), "model_config": e.model_config}


# ------------------------------------------------------------------ uploads
def upload_batches(rows: Iterator[dict[str, Any]], batch: int = 8192) -> Iterator[pa.RecordBatch]:
    """Normalised rows -> record batches of the upload schema (the client side)."""
    buf: list[dict[str, Any]] = []
    for r in rows:
        buf.append({k: r[k] for k in S.UPLOAD_SCHEMA.names})
        if len(buf) == batch:
            yield pa.RecordBatch.from_pylist(buf, schema=S.UPLOAD_SCHEMA)
            buf = []
    if buf:
        yield pa.RecordBatch.from_pylist(buf, schema=S.UPLOAD_SCHEMA)


def read_upload(body: bytes) -> pa.Table:
    """An uploaded Arrow stream, checked and cast to the upload schema."""
    table = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
    missing = [n for n in S.UPLOAD_SCHEMA.names if n not in table.column_names]
    if missing:
        raise ValueError(f"missing columns {missing}")
    if len(table) == 0:
        raise ValueError("no rows")
    return table.select(S.UPLOAD_SCHEMA.names).cast(S.UPLOAD_SCHEMA)


def store_upload(store: Store, table: pa.Table, name: str) -> dict[str, Any]:
    """Fingerprint uploaded rows exactly as local extraction does, and store them."""
    from embrm.extractor.plan import scan_rows

    def rows() -> Iterator[dict[str, Any]]:
        for b in table.to_batches(8192):
            yield from b.to_pylist()

    scan = scan_rows(rows, name, {"source": "upload"}, "pointwise")
    store.write_dataset_rows(scan.dataset_hash, scan.rows(), scan.n_rows)
    return {"dataset_hash": scan.dataset_hash, "rows": scan.n_rows, "name": name}


# ------------------------------------------------------------ entry pulls
PIECE = 1 << 20
END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # Arrow IPC: continuation marker, zero length


def entry_schema(e: Entry, texts: bool) -> pa.Schema:
    rows = S.ROW_SCHEMA
    fields = [rows.field(n) for n in ROW_COLUMNS + (TEXT_COLUMNS if texts else [])]
    value = pa.float16() if e.dtype == "float16" else pa.float32()
    fields += [pa.field("n_tokens", pa.int32()), pa.field("truncated", pa.bool_()),
               pa.field("vector", pa.list_(value, e.dim))]
    return pa.schema(fields, metadata={ENTRY_KEY: json.dumps(entry_json(e)).encode()})


def entry_stream(store: Store, e: Entry, layer: int | None, offset: int, limit: int | None, partial: bool,
                 texts: bool, batch_size: int = 8192) -> Iterator[bytes | memoryview]:
    """An entry's rows and vectors in dataset order as Arrow IPC bytes, a batch at a time."""
    schema = entry_schema(e, texts)
    yield schema.serialize().to_pybytes()  # the stream format is these messages back to back
    cols = ROW_COLUMNS[1:] + (TEXT_COLUMNS if texts else [])
    for b in store.iter_entry(e.model_hash, e.dataset_hash, layer=layer, batch_size=batch_size, columns=cols,
                              allow_partial=partial, offset=offset, limit=limit):
        flat = pa.array(np.ascontiguousarray(b.vectors).reshape(-1))
        arrays = [b.rows.column(n) for n in ROW_COLUMNS + (TEXT_COLUMNS if texts else [])]
        arrays += [pa.array(b.n_tokens, pa.int32()), pa.array(b.truncated, pa.bool_()),
                   pa.FixedSizeListArray.from_arrays(flat, e.dim)]
        msg = memoryview(pa.RecordBatch.from_arrays(arrays, schema=schema).serialize())
        for s in range(0, len(msg), PIECE):  # socket-sized pieces stay in cache through each copy
            yield msg[s:s + PIECE]
    yield END_OF_STREAM


# ------------------------------------------------------------ native embed
def embed_table(keys: list[str], vecs: list[ItemVectors | None], cached: list[bool], layers: list[int],
                dim: int) -> pa.Table:
    """``POST /v1/embed`` in Arrow: the store's vector schema, plus ``found`` and ``cached``."""
    sch = S.vector_schema(dim, "float32", tuple(layers))
    n = len(keys)
    cols: list[pa.Array] = [pa.array(keys, pa.string()),
                            pa.array([v.n_tokens if v else 0 for v in vecs], pa.int32()),
                            pa.array([v.truncated if v else False for v in vecs], pa.bool_())]
    for layer in layers:
        m = np.zeros((n, dim), np.float32)
        for i, v in enumerate(vecs):
            if v is not None:
                m[i] = v.vectors[layer]
        cols.append(pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), dim))
    table = pa.Table.from_arrays(cols, schema=sch)
    table = table.append_column("found", pa.array([v is not None for v in vecs]))
    return table.append_column("cached", pa.array(cached))
