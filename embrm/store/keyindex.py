"""Point reads of vectors by item key.

Placeholder implementation: a filtered scan in chunks of keys.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embrm.errors import EmbrmError
from embrm.store import schema as S

if TYPE_CHECKING:
    from embrm.store.store import Store, StoredVectors


def read_rows(store: Store, model_hash: str, keys: list[str], layers: Iterable[int] | None) -> StoredVectors:
    from embrm.store.store import StoredVectors

    info = store.vector_info(model_hash)
    if info is None:
        raise EmbrmError(f"model {model_hash[:12]} has no vectors in {store.uri}")
    want = tuple(info.layers if layers is None else layers)
    bad = [layer for layer in want if layer not in info.layers]
    if bad:
        raise EmbrmError(f"layer(s) {bad} were not extracted; stored layers: {list(info.layers)}")
    n = len(keys)
    np_dtype = np.float16 if info.dtype == "float16" else np.float32
    out = {layer: np.zeros((n, info.dim), np_dtype) for layer in want}
    found = np.zeros(n, bool)
    n_tokens = np.zeros(n, np.int32)
    truncated = np.zeros(n, bool)
    if n == 0:
        return StoredVectors(list(keys), found, out, n_tokens, truncated)
    ds = store.tables.get(S.vector_table(model_hash))
    cols = ["item_key", "n_tokens", "truncated", *(S.layer_column(layer) for layer in want)]
    ask = pa.array(keys, pa.string())
    for s in range(0, n, 2000):
        part = ask[s:s + 2000]
        lst = ",".join("'" + k.replace("'", "''") + "'" for k in part.to_pylist())
        t = ds.to_table(columns=cols, filter=f"item_key IN ({lst})")
        if len(t) == 0:
            continue
        idx = pc.fill_null(pc.index_in(ask, value_set=t.column("item_key").combine_chunks()), -1).to_numpy()
        hit = idx >= 0
        rows = np.nonzero(hit)[0]
        src = idx[hit].astype(np.int64)
        found[rows] = True
        n_tokens[rows] = t.column("n_tokens").to_numpy()[src]
        truncated[rows] = t.column("truncated").to_numpy(zero_copy_only=False)[src]
        for layer in want:
            flat = t.column(S.layer_column(layer)).combine_chunks().flatten().to_numpy(zero_copy_only=False)
            out[layer][rows] = flat.reshape(-1, info.dim)[src]
    return StoredVectors(list(keys), found, out, n_tokens, truncated)
