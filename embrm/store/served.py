"""The ``served`` entry: what ``embrm serve`` computed for ad-hoc requests.

Such items belong to no dataset, yet ``gc`` must keep their vectors and ``store
ls``/``export``/``rm`` should see them like any entry. So each model has one rows table
that grows (its key is a hash of the model's, not of content), appended under its lock
once per item key, and a catalog entry named ``served`` over it.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from embrm.store import schema as S
from embrm.store.tables import merge

if TYPE_CHECKING:
    from embrm.store.catalog import Entry
    from embrm.store.lance_store import LanceStore


def record_served(store: LanceStore, model_hash: str, model_name: str, model_config: dict[str, Any],
                  keys: list[str], prompts: list[str], responses: list[str]) -> Entry:
    """Add computed items (their vectors committed already) to the model's ``served`` entry."""
    dh = S.served_dataset_hash(model_hash)
    name = S.dataset_table(dh)
    tables = store.tables
    tables.create(name, S.SERVED_ROW_SCHEMA)
    with tables.lock(name):
        ds = tables.get(name)
        start = ds.count_rows()
        pos = np.arange(start, start + len(keys), dtype=np.int64)
        data = pa.table({"position": pos, "item_key": pa.array(keys, pa.string()), "prompt_id": pos,
                         "response_index": pa.array(np.zeros(len(keys), np.int32)),
                         "role": pa.array([""] * len(keys)), "label": pa.nulls(len(keys), pa.float64()),
                         "reward": pa.nulls(len(keys), pa.float64()),
                         "prompt": pa.array(prompts, pa.large_string()),
                         "response": pa.array(responses, pa.large_string())})
        merge(ds, "item_key", data)
        n = tables.get(name).count_rows()
    store.begin_entry(model_hash, model_name, model_config, dh, S.SERVED_NAME,
                      {"source": "embrm serve", "texts": "as embedded: a text longer than the model can use is kept "
                                                         "only in the part truncation keeps"}, "pointwise", n)
    fields: dict[str, Any] = {"n_rows": n, "rows": n, "status": "complete"}
    info = store.vectors.info(model_hash)
    if info is not None:
        fields.update(dim=info.dim, dtype=info.dtype, layers=json.dumps(list(info.layers)))
    return store.catalog.update(model_hash, dh, **fields)
