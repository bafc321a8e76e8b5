"""Export an entry to files other tools read: ``.npy`` (vectors only) or Parquet (rows,
texts, labels and vectors together, so every vector joins back to its data).

Both stream the entry batch by batch (:meth:`Store.iter_entry`), so an export never
holds the whole entry in memory, and the file appears whole or not at all.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from embrm.errors import EmbrmError
from embrm.paths import output_file
from embrm.store import schema as S
from embrm.store.loader import check_entry


def export(store: Any, model: str, dataset: str, out: str | Path, layer: int | None = None,
           texts: bool = True, batch_size: int = 8192, force: bool = False) -> Path:
    """Write the entry to ``out``; the suffix (``.npy`` or ``.parquet``) picks the format.

    ``.npy`` holds the ``(rows, D)`` vectors in dataset order. Parquet holds one row per
    dataset row: item key, prompt id, response index, role, label, reward, the prompt and
    response texts (unless ``texts=False``), token count, truncation flag and a
    fixed-size ``vector`` column. An existing ``out`` is replaced only with ``force``.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".npy", ".parquet"):
        raise EmbrmError(f"cannot export to {out.name}: use a .npy or .parquet file name")
    e = store.resolve(model, dataset)
    if e.status != "complete":
        raise EmbrmError(f"entry {e.model_name} x {e.dataset_name} is partial ({e.rows} of {e.n_rows} rows); "
                         "finish the extraction before exporting it")
    check_entry(e, layer, allow_partial=False)  # what was asked for is there: then the output path
    output_file(out, force, "the export")
    cols = S.ROW_COLUMNS + (S.TEXT_COLUMNS if texts and suffix == ".parquet" else [])
    batches = store.iter_entry(e.model_hash, e.dataset_hash, layer=layer, batch_size=batch_size, columns=cols)
    if suffix == ".parquet":
        return write_parquet(out, (_parquet_table(b, e.dim) for b in batches))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16 if e.dtype == "float16" else np.float32,
                                        shape=(e.n_rows, e.dim))
        at = 0
        for b in batches:
            arr[at:at + len(b.vectors)] = b.vectors
            at += len(b.vectors)
        arr.flush()
        del arr
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _parquet_table(b: Any, dim: int) -> pa.Table:
    t = pa.Table.from_batches([b.rows]).drop_columns(["position"])
    t = t.append_column("n_tokens", pa.array(b.n_tokens, pa.int32()))
    t = t.append_column("truncated", pa.array(b.truncated))
    flat = pa.array(np.ascontiguousarray(b.vectors).reshape(-1))
    return t.append_column("vector", pa.FixedSizeListArray.from_arrays(flat, dim))


def write_parquet(out: str | Path, tables: Iterable[pa.Table], **options: Any) -> Path:
    """Stream tables into one Parquet file that appears whole or not at all; ``options``
    go to :class:`pyarrow.parquet.ParquetWriter`."""
    import pyarrow.parquet as pq

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    writer = None
    try:
        for t in tables:
            if writer is None:
                writer = pq.ParquetWriter(tmp, t.schema, **options)
            writer.write_table(t)
        if writer is not None:
            writer.close()
            writer = None
        tmp.replace(out)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    return out
