"""The service's side of a copy into it: checks that need the store's parts, behind two
functions the HTTP routes call (:mod:`embrm.serve.routes.copies`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from embrm.errors import EmbrmError
from embrm.store.catalog import check_dataset_name
from embrm.store.keys import fingerprint_of_config

if TYPE_CHECKING:
    from embrm.store.catalog import Entry
    from embrm.store.lance_store import LanceStore


def dataset_info(store: LanceStore, dataset_hash: str) -> dict[str, Any] | None:
    """(hash, kind, rows) of a dataset whose rows are stored here, or None."""
    found = store.rows.recorded(dataset_hash)
    if found is None or found[0] != dataset_hash:
        return None
    return {"dataset_hash": dataset_hash, "kind": found[1], "rows": store.rows.table(dataset_hash).count_rows()}


def register_entry(store: LanceStore, model_hash: str, model_name: str, model_config: dict[str, Any],
                   dataset_hash: str, dataset_name: str, dataset_source: dict[str, Any], kind: str,
                   n_rows: int) -> Entry:
    """Open the entry a copy fills: its model's fingerprint parts must hash to
    ``model_hash``, and its dataset's rows (sent before, their hash recomputed on arrival)
    must be here, of this kind and count. :class:`LookupError` when the rows are not here."""
    fingerprint_of_config(model_config, model_hash)
    check_dataset_name(dataset_name)
    info = dataset_info(store, dataset_hash)
    if info is None:
        raise LookupError(f"dataset {dataset_hash[:12]} has no rows here; send them with PUT /v1/datasets")
    if info["kind"] is not None and info["kind"] != kind:
        raise EmbrmError(f"kind {kind} disagrees with the stored dataset, which is {info['kind']}")
    if info["rows"] != n_rows:
        raise EmbrmError(f"the stored dataset has {info['rows']} rows, not {n_rows}")
    store.begin_entry(model_hash, model_name, model_config, dataset_hash, dataset_name, dataset_source, kind, n_rows)
    e = store.entry(model_hash, dataset_hash)
    assert e is not None
    return e
