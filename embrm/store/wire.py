"""What crosses the wire between ``embrm serve`` and its client, defined once for both.

Entries travel as Arrow IPC streams with the store's own column types and order, so a
pulled entry loads exactly as a local one and the client needs only pyarrow. Uploaded
dataset rows use the store's upload schema; reward-model runs travel as a table of
(file name, bytes).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from embrm.store import schema as S

if TYPE_CHECKING:
    from embrm.store.catalog import Entry
    from embrm.store.loader import EntryBatch

ARROW = "application/vnd.apache.arrow.stream"
ENTRY_KEY = b"embrm.entry"  # schema metadata of a pulled entry: its summary (JSON)
PULL_COLUMNS = ["position", *S.ROW_COLUMNS]
RUN_FILES_SCHEMA = pa.schema([("name", pa.string()), ("data", pa.large_binary())])


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def entry_json(e: Entry) -> dict[str, Any]:
    return {**e.summary(), "model_config": e.model_config}


def entry_schema(e: Entry, texts: bool) -> pa.Schema:
    """The columns of a pulled entry: rows (with texts if asked), token facts, vector."""
    fields = [S.ROW_SCHEMA.field(n) for n in PULL_COLUMNS + (S.TEXT_COLUMNS if texts else [])]
    value = pa.float16() if e.dtype == "float16" else pa.float32()
    fields += [pa.field("n_tokens", pa.int32()), pa.field("truncated", pa.bool_()),
               pa.field("vector", pa.list_(value, e.dim))]
    return pa.schema(fields, metadata={ENTRY_KEY: json.dumps(entry_json(e)).encode()})


def entry_batch(b: pa.RecordBatch, dim: int) -> EntryBatch:
    """A pulled record batch as the :class:`~embrm.store.loader.EntryBatch` a local
    stream gives."""
    from embrm.store.loader import EntryBatch

    rows = b.select([n for n in b.schema.names if n in PULL_COLUMNS or n in S.TEXT_COLUMNS])
    flat = b.column("vector").flatten().to_numpy(zero_copy_only=False)
    return EntryBatch(rows, flat.reshape(len(b), dim), b.column("n_tokens").to_numpy(),
                      b.column("truncated").to_numpy(zero_copy_only=False))


def upload_batches(rows: Iterable[dict[str, Any]], batch: int = 8192) -> Iterator[pa.RecordBatch]:
    """Normalised rows -> record batches of the upload schema (the client side)."""
    buf: list[dict[str, Any]] = []
    for r in rows:
        buf.append({k: r[k] for k in S.UPLOAD_SCHEMA.names})
        if len(buf) == batch:
            yield pa.RecordBatch.from_pylist(buf, schema=S.UPLOAD_SCHEMA)
            buf = []
    if buf:
        yield pa.RecordBatch.from_pylist(buf, schema=S.UPLOAD_SCHEMA)


def run_files_ipc(files: dict[str, bytes]) -> bytes:
    """A reward-model run's files as one Arrow IPC stream."""
    return to_ipc(pa.table({"name": list(files), "data": list(files.values())}, schema=RUN_FILES_SCHEMA))


def run_files_of(body: Any) -> dict[str, Any]:
    """The inverse of :func:`run_files_ipc`: ``{name: buffer}`` from the stream's bytes, or
    from a memory-mapped file (:func:`run_files_in`), the buffers views of it (no copy);
    raises ``ValueError`` for anything else."""
    try:
        t = pa.ipc.open_stream(body if isinstance(body, pa.NativeFile) else pa.py_buffer(body)).read_all()
        t.validate(full=True)  # offsets in bounds and names UTF-8, before anything reads a value
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"not an Arrow IPC stream ({(str(e).splitlines() or ['damaged'])[0][:120]})") from None
    if t.schema.names != RUN_FILES_SCHEMA.names:
        raise ValueError(f"expected columns {RUN_FILES_SCHEMA.names}, got {t.schema.names[:5]}")
    try:
        t = t.cast(RUN_FILES_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        raise ValueError("columns name (string) and data (binary) have other types") from None
    if t.num_rows > 10_000:
        raise ValueError(f"{t.num_rows} files is more than a run holds")
    names = t.column("name").to_pylist()
    datas = _slices(t.column("data"))
    if any(n is None for n in names) or any(d is None for d in datas) or len(set(names)) != len(names):
        raise ValueError("every file needs a unique name and its bytes")
    return dict(zip(names, datas))


def _slices(col: pa.ChunkedArray) -> list[Any]:
    """Each value of a large_binary column as a zero-copy slice of its data buffer (a
    scalar's ``as_buffer`` was measured to copy: 400 MB more for a 200 MB run); None
    for a null."""
    import numpy as np

    out: list[Any] = []
    for chunk in col.chunks:
        _, offsets, data = chunk.buffers()
        data = data if data is not None else pa.py_buffer(b"")
        at = np.frombuffer(offsets, np.int64, len(chunk) + 1, chunk.offset * 8)
        valid = chunk.is_valid().to_numpy(zero_copy_only=False)
        out += [data.slice(int(at[i]), int(at[i + 1] - at[i])) if valid[i] else None for i in range(len(chunk))]
    return out


def run_files_in(path: str) -> dict[str, Any]:
    """:func:`run_files_of` a file, memory-mapped: a large upload is never copied whole."""
    return run_files_of(pa.memory_map(str(path)))
