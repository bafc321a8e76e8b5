"""Vector tables, write side: every way vectors enter a store keeps one row per item key.

* :meth:`VectorWriter.commit` inserts a table built by
  :func:`~embrm.store.vectors.build_vector_table` as one commit. Where commits are
  exclusive (local disk, under the table's lock) the rows whose keys the table lacks are
  appended in their given order, after a check against the key index: appending keeps a
  table in the order its items were extracted (dataset order), so a load reads long
  runs straight into place, which ``merge_insert`` would not (it reorders each commit).
  Elsewhere (object storage) rows go through ``merge_insert`` on the item key, which Lance
  checks against concurrent writers because the key field carries its primary-key marker.
* The Ray engine's fragments: workers write uncommitted Lance fragments
  (:meth:`write_fragments`); the driver alone commits them (:meth:`commit_fragments`).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embrm.errors import EmbrmError
from embrm.store import schema as S
from embrm.store.keys import short
from embrm.store.provenance import COLUMN as PROV_COLUMN
from embrm.store.provenance import ProvenanceTable, records_of
from embrm.store.tables import Tables, merge, retry
from embrm.store.vector_tables import VectorTables
from embrm.store.vectors import VectorInfo, build_vector_table


class VectorWriter:
    """Writes into the vector tables of one store."""

    def __init__(self, tables: Tables, vectors: VectorTables):
        self.tables, self.vectors = tables, vectors
        self.provenance = ProvenanceTable(tables)

    def _table_for(self, model_hash: str, info: VectorInfo) -> VectorInfo:
        """The model's table (created if new); refuse vectors that do not fit it."""
        have = self.vectors.info(model_hash)
        if have is None:
            self.tables.create(S.vector_table(model_hash), replace(info, provenance=True).schema())
            have = self.vectors.info(model_hash)
        assert have is not None
        if (have.dim, have.dtype, set(have.layers)) != (info.dim, info.dtype, set(info.layers)):
            raise EmbrmError(f"vectors of {info} do not fit model {short(model_hash)}'s table of {have}; "
                             "a different configuration needs its own fingerprint")
        return have

    def commit(self, model_hash: str, data: pa.Table) -> int:
        """Insert a table built by :func:`build_vector_table` as one commit, under the
        table's lock. Items already stored are skipped; returns the rows inserted."""
        have = self._table_for(model_hash, VectorInfo.of_schema(data.schema))
        data = self.fit(data, have)
        name = S.vector_table(model_hash)
        with self.tables.lock(name):
            ds = self.tables.get(name)  # the latest version, under the lock
            if not self.tables.exclusive_commits:
                return merge(ds, "item_key", data)
            keys = data.column("item_key").to_pylist()
            stored = self.vectors.stored(model_hash, ds, keys)
            _, first = np.unique(np.array(keys, dtype=object), return_index=True)
            keep = np.zeros(len(keys), bool)
            keep[first] = True
            keep &= ~stored
            if not keep.any():
                return 0
            new = data.filter(pa.array(keep)).cast(ds.schema)
            self.tables.append(name, new)
            return len(new)

    def fit(self, data: pa.Table, have: VectorInfo) -> pa.Table:
        """``data`` in the columns of a table of ``have``, its provenance records stored
        first (so every committed id has its facts). A batch without provenance gets null
        ids; a table of an older embrm, without the column, gets the batch without it."""
        records = records_of(data.schema)
        if records:
            self.provenance.record(records)
        if have.provenance and PROV_COLUMN not in data.schema.names:
            data = data.append_column(pa.field(PROV_COLUMN, pa.string()), pa.nulls(len(data), pa.string()))
        return data.select(have.schema().names)

    def write(self, model_hash: str, item_keys: list[str], vectors: Mapping[int, np.ndarray],
              n_tokens: np.ndarray, truncated: np.ndarray, dtype: str = "float32") -> int:
        """Build and commit one chunk of vectors (see :meth:`commit`). A batch that does not
        fit the table is refused before anything is written."""
        data = build_vector_table(item_keys, vectors, n_tokens, truncated, dtype, expect=self.vectors.info(model_hash))
        return self.commit(model_hash, data)

    # ---------------------------------------------------- distributed writers
    def ensure_table(self, model_hash: str, info: VectorInfo) -> None:
        """Create a model's vector table before workers write fragments into it."""
        self._table_for(model_hash, info)

    def write_fragments(self, model_hash: str, data: pa.Table) -> list[str]:
        """Write vectors as uncommitted Lance fragments (a worker's side of a distributed
        extraction); returns their metadata as JSON for the driver to commit. Until then
        they are invisible, and ``gc`` removes them if nobody ever commits them."""
        from lance.fragment import write_fragments

        name = S.vector_table(model_hash)
        ds = self.tables.get(name)
        data = self.fit(data, VectorInfo.of_schema(ds.schema))
        frags = write_fragments(data.cast(ds.schema), self.tables.path(name), schema=ds.schema,
                                storage_options=self.tables.lance_options)
        return [json.dumps(f.to_json()) for f in frags]

    def commit_fragments(self, model_hash: str, fragments: list[str], keys: pa.Array) -> int:
        """Commit workers' fragments as one append, under the table's lock.

        Checked first: the fragments hold exactly ``len(keys)`` rows, no key comes twice,
        and none is stored already. Fragments whose keys another writer stored meanwhile,
        or any fragments where commits are not exclusive (object storage, where a plain
        append is not checked against concurrent inserts), are read back and merged
        instead (their files are left for ``gc``), so the table never holds a key twice.
        Returns the rows added.
        """
        import lance
        from lance.fragment import FragmentMetadata

        frags = [FragmentMetadata.from_json(f) for f in fragments]
        rows = sum(f.physical_rows for f in frags)
        if rows != len(keys):
            raise EmbrmError(f"workers' fragments hold {rows} rows but {len(keys)} items were sent; nothing committed")
        if len(pc.unique(keys)) != len(keys):
            raise EmbrmError("an item key arrived twice from the workers; nothing committed")
        name = S.vector_table(model_hash)
        path = self.tables.path(name)
        with self.tables.lock(name):
            ds = self.tables.get(name)
            if self.tables.exclusive_commits and not self.vectors.stored(model_hash, ds, keys.to_pylist()).any():
                retry(lambda: lance.LanceDataset.commit(path, lance.LanceOperation.Append(frags),
                                                        read_version=ds.version,
                                                        storage_options=self.tables.lance_options))
                return rows
            data = pa.concat_tables(_read_fragment(path, f, self.tables.lance_options) for f in frags)
            return merge(ds, "item_key", data)


def _read_fragment(table_uri: str, frag: Any, storage_options: dict[str, str] | None) -> pa.Table:
    """The rows of an uncommitted fragment, read from its data file (a fresh fragment has
    one file holding every column)."""
    from lance.file import LanceFileReader

    if len(frag.files) != 1:
        raise EmbrmError(f"a worker's fragment has {len(frag.files)} data files; expected one")
    path = f"{table_uri}/data/{frag.files[0].path}"
    return LanceFileReader(path, storage_options=storage_options).read_all().to_table()
