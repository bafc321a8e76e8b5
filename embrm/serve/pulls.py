"""Entry pulls (``GET /v1/entries/{model}/{dataset}/vectors``): an entry as Arrow IPC bytes.

The stream is these messages back to back: the schema (:func:`embrm.store.wire.entry_schema`),
one record batch per batch of the store's own streaming read, and the end marker. Each
batch is serialised once and sent in 1 MB pieces, which stay in cache through each copy.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from embrm.store import schema as S
from embrm.store.wire import PULL_COLUMNS, entry_schema

if TYPE_CHECKING:
    from embrm.store.base import Store
    from embrm.store.catalog import Entry

PIECE = 1 << 20
END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # Arrow IPC: continuation marker, zero length


def entry_stream(store: Store, e: Entry, layer: int | None, offset: int, limit: int | None, partial: bool,
                 texts: bool, batch_size: int = 8192) -> Iterator[bytes | memoryview]:
    """An entry's rows and vectors in dataset order as Arrow IPC bytes, a batch at a time."""
    schema = entry_schema(e, texts)
    yield schema.serialize().to_pybytes()
    names = PULL_COLUMNS + (S.TEXT_COLUMNS if texts else [])
    for b in store.iter_entry(e.model_hash, e.dataset_hash, layer, batch_size, names[1:], partial, offset, limit):
        flat = pa.array(np.ascontiguousarray(b.vectors).reshape(-1))
        arrays = [b.rows.column(n) for n in names]
        arrays += [pa.array(b.n_tokens, pa.int32()), pa.array(b.truncated, pa.bool_()),
                   pa.FixedSizeListArray.from_arrays(flat, e.dim)]
        msg = memoryview(pa.RecordBatch.from_arrays(arrays, schema=schema).serialize())
        for s in range(0, len(msg), PIECE):
            yield msg[s:s + PIECE]
    yield END_OF_STREAM
