"""Export an entry to files other tools read: ``.npy`` (vectors only) or Parquet
(rows, labels and vectors together)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embrm.errors import EmbrmError
from embrm.store.loader import load
from embrm.store.store import Store


def export(store: Store, model: str, dataset: str, out: str | Path, layer: int | None = None) -> Path:
    """Write the entry to ``out``; the suffix (``.npy`` or ``.parquet``) picks the format.

    ``.npy`` holds the ``(rows, D)`` vectors in dataset order. Parquet holds one row per
    dataset row with its prompt id, response index, role, label, reward, token count and
    a fixed-size ``vector`` column.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".npy", ".parquet"):
        raise EmbrmError(f"cannot export to {out.name}: use a .npy or .parquet file name")
    emb = load(store, model, dataset, layer=layer)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if suffix == ".npy":
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(emb.vectors))
    else:
        flat = pa.array(np.ascontiguousarray(emb.vectors).reshape(-1))
        table = pa.table(
            {
                "item_key": emb.item_key,
                "prompt_id": emb.prompt_id,
                "response_index": emb.response_index,
                "role": list(emb.role),
                "label": emb.label,
                "reward": emb.reward,
                "n_tokens": emb.n_tokens,
                "truncated": emb.truncated,
                "vector": pa.FixedSizeListArray.from_arrays(flat, emb.dim),
            }
        )
        pq.write_table(table, tmp)
    tmp.replace(out)
    return out
