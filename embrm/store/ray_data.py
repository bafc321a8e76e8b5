"""An entry as a Ray Dataset, for evaluating or scoring entries larger than one machine.

Each read task streams one slice of the entry (:meth:`Store.iter_entry` with an offset and
a limit) from the store, so the cluster's workers read in parallel and no process holds
the whole entry. Ray is imported only here, and only when this is used.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from embrm.errors import EmbrmError


def ray_dataset(store_uri: str, model: str, dataset: str, layer: int | None = None, rows_per_task: int = 65536,
                batch_size: int = 8192) -> Any:
    """A ``ray.data.Dataset`` of the entry's rows, labels and vectors (a ``vector``
    column of fixed-size lists), in dataset order when read with ``preserve_order``."""
    try:
        import ray.data
    except ImportError:
        raise EmbrmError("an entry as a Ray Dataset needs Ray Data: `pip install 'embrm[ray]'`") from None
    from embrm.store.backends import open_store

    e = open_store(store_uri).resolve(model, dataset)
    slices = [{"offset": o, "limit": min(rows_per_task, e.n_rows - o)} for o in range(0, e.n_rows, rows_per_task)]

    def read(batch: dict[str, np.ndarray]) -> pa.Table:
        st = open_store(store_uri)
        parts = []
        for off, lim in zip(batch["offset"].tolist(), batch["limit"].tolist()):
            for b in st.iter_entry(e.model_hash, e.dataset_hash, layer=layer, batch_size=batch_size, offset=off,
                                   limit=lim):
                t = pa.Table.from_batches([b.rows])
                flat = pa.array(np.ascontiguousarray(b.vectors).reshape(-1))
                t = t.append_column("n_tokens", pa.array(b.n_tokens, pa.int32()))
                parts.append(t.append_column("vector", pa.FixedSizeListArray.from_arrays(flat, e.dim)))
        return pa.concat_tables(parts)

    return ray.data.from_items(slices).map_batches(read, batch_size=1, batch_format="numpy")
