"""Keeping a store small: compaction of fragmented tables, and ``gc``.

Both run over the store's parts (tables, catalog, rows, vectors, load cache) given to
them; neither is needed for correctness, only for disk and read speed.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc

from embrm.store import schema as S
from embrm.store.cache import LoadCache
from embrm.store.catalog import Catalog
from embrm.store.loader import EntryReader
from embrm.store.rows import DatasetRows
from embrm.store.tables import Tables, retry, sql_str
from embrm.store.vector_tables import VectorTables

COMPACT_AFTER = 8  # fragments a vector table may have before finishing an entry compacts it
DELETE_CHUNK = 1000  # keys per delete filter


def compact(tables: Tables, name: str, min_fragments: int = COMPACT_AFTER) -> None:
    """Merge small fragments into few; old versions are kept (readers may hold them)."""
    ds = tables.open(name)
    if ds is None or len(ds.get_fragments()) <= min_fragments:
        return
    try:
        with tables.lock(name):
            retry(lambda: tables.get(name).optimize.compact_files())
    except Exception as e:  # compaction is an optimisation: never fail a write for it
        if "conflict" not in str(e).lower():
            raise


def gc(tables: Tables, catalog: Catalog, rows: DatasetRows, vectors: VectorTables, reader: EntryReader,
       cache: LoadCache, keep: Iterable[str] = ()) -> dict[str, int]:
    """Drop what no entry refers to, compact every table, remove old versions and files
    no version refers to (a crash's uncommitted fragments), and clear stale caches.
    ``keep`` names tables that belong to no entry but stay (the catalog, the meta table,
    the reward-model registry).

    Run it when nothing else uses the store: a reader or writer of an old version, or
    a writer whose files are not committed yet, can fail or lose its work.
    """
    entries = catalog.entries()
    used = {S.CATALOG_TABLE, S.META_TABLE, *keep}
    used |= {S.dataset_table(e.dataset_hash) for e in entries}
    used |= {S.vector_table(e.model_hash) for e in entries}
    dropped = vectors_deleted = 0
    for name in sorted(tables.names() - used):
        if name.startswith(("ds_", "vec_")):
            tables.drop(name)
            dropped += 1
    for mh in {e.model_hash for e in entries}:
        if vectors.open(mh) is None:
            continue
        wanted = [rows.keys(e.dataset_hash) for e in entries if e.model_hash == mh and rows.has(e.dataset_hash)]
        have = vectors.cached(mh)
        want = pa.chunked_array([c for k in wanted for c in k.chunks], pa.string()).combine_chunks()
        orphan = have.filter(pc.invert(pc.is_in(have, value_set=want)))
        name = S.vector_table(mh)
        for s in range(0, len(orphan), DELETE_CHUNK):
            lst = ",".join(sql_str(k) for k in orphan[s:s + DELETE_CHUNK].to_pylist())
            with tables.lock(name):
                retry(lambda: tables.get(name).delete(f"item_key IN ({lst})"))
        vectors_deleted += len(orphan)
    for name in sorted(tables.names()):
        compact(tables, name, min_fragments=1)
        retry(lambda: tables.get(name).cleanup_old_versions(older_than=timedelta(0), delete_unverified=True))
    current: set[str] = set()
    for e in catalog.entries():
        if e.layers and vectors.open(e.model_hash) is not None:
            versions = reader.versions(e)
            current |= {cache.name(cache.stem(e.model_hash, e.dataset_hash, S.layer_column(layer)), versions)
                        for layer in e.layers}
    return {"tables_dropped": dropped, "vectors_deleted": vectors_deleted,
            "cache_files_removed": cache.clear_stale(current)}
