"""Vector tables as Arrow data: build one (pure), read a table's dim, dtype and layers.

:func:`build_vector_table` is the one place where vectors become a table of the
store's vector schema. Every writer goes through it: the local extraction loop, the
service's commits and the Ray workers' fragments, so validation is the same for all.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from embrm.errors import EmbrmError
from embrm.store import schema as S
from embrm.store.provenance import COLUMN as PROV_COLUMN
from embrm.store.provenance import prov_id, with_records


@dataclass(frozen=True)
class VectorInfo:
    """What a vector table holds: every row has one vector per layer of this shape."""

    dim: int
    dtype: str
    layers: tuple[int, ...]
    #: whether rows carry a provenance id (tables of an older embrm do not)
    provenance: bool = True

    @classmethod
    def of_schema(cls, sch: pa.Schema) -> VectorInfo:
        layers = tuple(S.column_layer(f.name) for f in sch if f.name.startswith("layer_"))
        if not layers:
            raise EmbrmError("a vector table needs at least one layer column")
        f = sch.field(S.layer_column(layers[0]))
        dtype = "float16" if f.type.value_type == pa.float16() else "float32"
        return cls(f.type.list_size, dtype, layers, PROV_COLUMN in sch.names)

    def schema(self) -> pa.Schema:
        return S.vector_schema(self.dim, self.dtype, self.layers, self.provenance)


def build_vector_table(
    item_keys: list[str] | pa.Array,
    vectors: Mapping[int, np.ndarray],
    n_tokens: np.ndarray,
    truncated: np.ndarray,
    dtype: str = "float32",
    expect: VectorInfo | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> pa.Table:
    """Validate vectors and arrange them as a table of the vector schema.

    ``vectors`` maps layer -> (n, dim) array. ``expect`` is what the target table
    already holds: a batch that disagrees with it (dim, dtype or layers) is refused here,
    before anything is written. Columns follow ``expect``'s layer order when given.
    ``provenance`` is how these vectors were computed (:mod:`embrm.store.provenance`):
    every row gets its id, and the table carries the facts to the writer.
    """
    if dtype not in S.VECTOR_DTYPES:
        raise EmbrmError(f"vector dtype {dtype!r} is not supported; use one of {S.VECTOR_DTYPES}")
    n = len(item_keys)
    layers = tuple(vectors)
    if not layers:
        raise EmbrmError("no layers given to write")
    dims = {v.shape[1] if v.ndim == 2 else -1 for v in vectors.values()}
    if len(dims) != 1 or -1 in dims:
        raise EmbrmError("every layer's vectors must be 2-D (rows, dim) with the same dim")
    dim = dims.pop()
    for layer, v in vectors.items():
        if v.shape[0] != n:
            raise EmbrmError(f"layer {layer} has {v.shape[0]} vectors for {n} item keys")
        if not np.isfinite(v).all():
            raise EmbrmError(f"layer {layer} has NaN or inf values; refusing to store them")
    if len(n_tokens) != n or len(truncated) != n:
        raise EmbrmError(f"token counts and truncation flags must have one value per item key ({n})")
    if expect is not None:
        if expect.dim != dim:
            raise EmbrmError(f"vectors have dim {dim} but the table stores dim {expect.dim}; "
                             "a different model needs its own fingerprint")
        if expect.dtype != dtype:
            raise EmbrmError(f"vectors are {dtype} but the table stores {expect.dtype}; "
                             f"cast to {expect.dtype} or extract under a new fingerprint")
        if set(expect.layers) != set(layers):
            raise EmbrmError(f"vectors are for layers {list(layers)} but the table stores "
                             f"layers {list(expect.layers)}")
        layers = expect.layers
    np_dtype = np.float16 if dtype == "float16" else np.float32
    keys = item_keys if isinstance(item_keys, pa.Array) else pa.array(item_keys, pa.string())
    cols: list[pa.Array] = [
        keys.cast(pa.string()),
        pa.array(np.asarray(n_tokens, dtype=np.int32)),
        pa.array(np.asarray(truncated, dtype=bool)),
    ]
    for layer in layers:
        flat = np.ascontiguousarray(vectors[layer], dtype=np_dtype).reshape(-1)
        cols.append(pa.FixedSizeListArray.from_arrays(pa.array(flat), dim))
    pid = None if provenance is None else prov_id(dict(provenance))
    cols.append(pa.nulls(n, pa.string()) if pid is None else pa.array([pid] * n, pa.string()))
    table = pa.Table.from_arrays(cols, schema=S.vector_schema(dim, dtype, layers))
    return table if pid is None else with_records(table, {pid: dict(provenance or {})})


#: What every reader of a vector table's keys takes with them: the per-item facts.
KEY_COLUMNS = ["item_key", "n_tokens", "truncated"]


def key_columns(source: Any, columns: list[str] | None = None) -> pa.Table:
    """The one way to scan a vector table's keys (a Lance dataset or one fragment of it),
    in table order; ``columns`` defaults to the keys and their token facts."""
    return source.to_table(columns=columns or KEY_COLUMNS)
