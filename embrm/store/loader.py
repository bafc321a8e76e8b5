"""Reading entries: whole (``load``, into numpy) or streamed (``iter_entry``, in batches).

An :class:`EntryReader` is given what it reads from (the rows tables, the vector tables
and the load cache of one store) and an entry already resolved by the catalog.

Every trainer goes through :meth:`EntryReader.load`, so it has to be close to
``np.load`` speed:

* **One scan maps rows to vectors** (:func:`row_sources`): each dataset row's offset in
  the vector table, with no join at all when the table holds the dataset's keys in order.
* **The read never touches Python objects.** :func:`embrm.store.scan.read_column_rows`
  reads the vector pages of a local store straight into one preallocated array (Lance's
  reader in small batches elsewhere).
* **An optional local materialisation** (:mod:`embrm.store.cache`), keyed by the tables'
  versions, makes a repeat load one ``np.load`` (or a memory map).

:meth:`EntryReader.iter` streams an entry in dataset order with memory bounded by the batch
size plus 13 bytes a row, for scoring, exporting and serving entries larger than memory.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embrm.errors import EmbrmError
from embrm.store import schema as S
from embrm.store.cache import LoadCache, Materialised
from embrm.store.catalog import Entry
from embrm.store.rows import DatasetRows
from embrm.store.vector_tables import VectorTables
from embrm.store.vectors import key_columns

if TYPE_CHECKING:
    import lance


@dataclass
class Embeddings:
    """Vectors of one entry in dataset order, with the rows' structure and labels.

    ``vectors`` is ``(rows, dim)``; :meth:`multi`, :meth:`pairwise` and
    :meth:`pointwise` give the seed paper's shapes.
    """

    vectors: np.ndarray
    kind: str
    layer: int
    entry: Entry
    prompt_id: np.ndarray
    response_index: np.ndarray
    role: np.ndarray
    label: np.ndarray
    reward: np.ndarray
    n_tokens: np.ndarray
    truncated: np.ndarray
    keys: pa.Array | pa.ChunkedArray = field(repr=False, default_factory=lambda: pa.array([], pa.string()))

    @property
    def item_key(self) -> list[str]:
        """The rows' item keys as Python strings (built on demand: a million of them cost
        a tenth of a second that most trainers never need)."""
        return self.keys.to_pylist()

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def multi(self) -> tuple[np.ndarray, np.ndarray]:
        """``(prompts, K, D)`` vectors and ``(prompts, K)`` rewards (NaN where absent).

        Needs the same K for every prompt: rows are grouped by prompt id and ordered by
        response index.
        """
        pids, counts = np.unique(self.prompt_id, return_counts=True)
        if len(pids) == 0:
            raise EmbrmError("entry has no rows")
        if counts.min() != counts.max():
            raise EmbrmError(
                f"prompts have between {counts.min()} and {counts.max()} responses; "
                "the (prompts, K, D) shape needs the same K for every prompt"
            )
        k = int(counts[0])
        order = np.lexsort((self.response_index, self.prompt_id))
        v = self.vectors[order].reshape(len(pids), k, self.dim)
        r = self.reward[order].reshape(len(pids), k)
        return v, r

    def pairwise(self) -> tuple[np.ndarray, np.ndarray]:
        """``(pairs, 2, D)`` with the chosen response first, and each pair's prompt id.

        Records that share a prompt text share a prompt id (so splits by prompt id are
        prompt-disjoint). The prompt id is the chosen response's: a pair whose two
        responses answer different prompts (a cross-prompt pair) has a second one,
        ``prompt_id[pair_rows()[:, 1]]``.
        """
        rows = self.pair_rows()
        return self.vectors[rows], self.prompt_id[rows[:, 0]]

    def pair_rows(self) -> np.ndarray:
        """``(pairs, 2)`` row indices of each record's chosen and rejected rows.

        A record's two rows are consecutive in dataset order (the readers write them so),
        which holds whether they share a prompt or not. Pairs come grouped by the prompt
        id of their first row, in record order within a prompt.
        """
        if self.kind != "pairwise":
            raise EmbrmError(f"entry is {self.kind}, not pairwise; use multi() or pointwise()")
        role = self.role
        n = len(role)
        first, second = role[0::2], role[1::2]
        if n % 2 or not (((first == "chosen") & (second == "rejected"))
                         | ((first == "rejected") & (second == "chosen"))).all():
            raise EmbrmError("pairwise entry has a record with one of its two responses missing")
        rows = np.arange(n).reshape(-1, 2)
        rows = np.where((first == "chosen")[:, None], rows, rows[:, ::-1])
        return rows[np.lexsort((self.response_index[0::2], self.prompt_id[0::2]))]

    def pointwise(self) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, D)`` vectors and one target per row: the label, else the reward."""
        y = np.where(np.isnan(self.label), self.reward, self.label)
        return self.vectors, y


@dataclass
class EntryBatch:
    """A run of consecutive rows of an entry, in dataset order."""

    rows: pa.RecordBatch  # position, the row columns asked for
    vectors: np.ndarray  # (rows, dim)
    n_tokens: np.ndarray
    truncated: np.ndarray


def check_entry(e: Entry, layer: int | None, allow_partial: bool) -> int:
    """The layer to read (default: the first stored), or a one-line error for an entry that
    cannot be read that way."""
    if e.status != "complete" and not allow_partial:
        raise EmbrmError(
            f"entry {e.model_name} x {e.dataset_name} is partial ({e.rows} of {e.n_rows} rows); "
            "re-run the extraction to finish it, or pass allow_partial=True"
        )
    if not e.layers:
        raise EmbrmError(f"entry {e.model_name} x {e.dataset_name} has no vectors yet")
    if layer is None:
        layer = e.layers[0]
    if layer not in e.layers:
        raise EmbrmError(
            f"layer {layer} was not extracted for {e.model_name}; stored layers: "
            f"{', '.join(str(x) for x in e.layers)}"
        )
    return layer


def embeddings_of(rows: pa.Table, m: Materialised, e: Entry, layer: int) -> Embeddings:
    """Rows (in dataset order) and their vectors as :class:`Embeddings`; an entry pulled
    from the service (:mod:`embrm.store.service`) is arranged by the same function."""
    return Embeddings(
        vectors=m.vectors,
        kind=e.kind,
        layer=layer,
        entry=e,
        prompt_id=rows.column("prompt_id").to_numpy(),
        response_index=rows.column("response_index").to_numpy(),
        role=np.asarray(rows.column("role").to_pylist(), dtype=object),
        label=_f64(rows, "label"),
        reward=_f64(rows, "reward"),
        n_tokens=m.n_tokens,
        truncated=m.truncated,
        keys=rows.column("item_key"),
    )


def _f64(rows: pa.Table | pa.RecordBatch, name: str) -> np.ndarray:
    return rows.column(name).to_numpy(zero_copy_only=False).astype(np.float64)


def row_sources(vds: lance.LanceDataset, row_keys: pa.ChunkedArray | pa.Array
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row key: its row offset in vector table ``vds`` (-1 where it has no vector),
    token count and truncation flag. One scan of the table's keys; when the table holds
    exactly the rows' keys in the same order (an entry extracted into a fresh table), the
    offsets are 0..n-1 with no join at all."""
    meta = key_columns(vds)
    stored = meta.column("item_key")
    if len(stored) == len(row_keys) and stored.equals(row_keys):
        src = np.arange(len(row_keys), dtype=np.int64)
        return src, meta.column("n_tokens").to_numpy(), meta.column("truncated").to_numpy(zero_copy_only=False)
    idx = pc.index_in(row_keys, value_set=stored.combine_chunks())
    src = pc.fill_null(idx, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    present = src >= 0
    n_tokens = np.zeros(len(src), np.int32)
    truncated = np.zeros(len(src), bool)
    n_tokens[present] = meta.column("n_tokens").to_numpy()[src[present]]
    truncated[present] = meta.column("truncated").to_numpy(zero_copy_only=False)[src[present]]
    return src, n_tokens, truncated


class EntryReader:
    """Loads and streams entries of one store from its rows and vector tables.

    ``cache_by_default``: whether loads use the local materialisation unless told
    otherwise (a local store does when ``$EMBRM_CACHE_SIZE`` turns it on; an object store
    never keeps a local copy of a remote entry unless asked for with ``use_cache=True``).
    """

    def __init__(self, rows: DatasetRows, vectors: VectorTables, cache: LoadCache, cache_by_default: bool):
        self.rows, self.vectors, self.cache, self.cache_by_default = rows, vectors, cache, cache_by_default

    def versions(self, e: Entry) -> tuple[int, int]:
        """(vector table version, rows table version): what a cached load or an ETag keys on."""
        return self.vectors.get(e.model_hash).version, self.rows.version(e.dataset_hash)

    def cache_path(self, e: Entry, layer: int) -> Path:
        """The materialisation file a load of this entry and layer would use now."""
        stem = self.cache.stem(e.model_hash, e.dataset_hash, S.layer_column(layer))
        return self.cache.paths(stem, self.versions(e))[0]

    def load(self, e: Entry, layer: int | None = None, mmap: bool = False, allow_partial: bool = False,
             use_cache: bool | None = None) -> Embeddings:
        """One entry's vectors and rows in dataset order.

        ``layer`` defaults to the first extracted layer. A partial entry (an extraction that
        has not finished) is refused unless ``allow_partial``, which returns the rows that
        have vectors. ``use_cache`` decides the local materialisation (:mod:`embrm.store.cache`);
        ``mmap=True`` memory-maps such a copy, written for the purpose if needed.
        """
        if use_cache is None:
            use_cache = self.cache_by_default
        layer = check_entry(e, layer, allow_partial)
        rows = self.rows.read(e.dataset_hash, S.ROW_COLUMNS)
        vds = self.vectors.get(e.model_hash)  # one version for keys, vectors and the cache name
        versions = (vds.version, self.rows.version(e.dataset_hash))
        stem = self.cache.stem(e.model_hash, e.dataset_hash, S.layer_column(layer))
        m = self.cache.get(stem, versions, mmap) if use_cache or mmap else None
        if m is None:
            src, n_tokens, truncated = row_sources(vds, rows.column("item_key"))
            present = src >= 0
            vectors = self.vectors.read_rows(e.model_hash, vds, layer, e.dim, e.dtype, src[present])
            m = Materialised(vectors, n_tokens[present], truncated[present], present)
            if use_cache or mmap:
                path = self.cache.put(stem, versions, m, force=mmap)
                if mmap and path is not None:
                    m = Materialised(np.load(path, mmap_mode="r"), m.n_tokens, m.truncated, m.present)
        if not m.present.all():
            if not allow_partial:
                raise EmbrmError(
                    f"{int((~m.present).sum())} rows of {e.dataset_name} have no vector under "
                    f"{e.model_name}; re-run the extraction"
                )
            rows = rows.filter(pa.array(m.present))
        return embeddings_of(rows, m, e, layer)

    def iter(self, e: Entry, layer: int | None = None, batch_size: int = 8192, columns: list[str] | None = None,
             allow_partial: bool = False, offset: int = 0, limit: int | None = None) -> Iterator[EntryBatch]:
        """Stream an entry in dataset order: rows, their vectors and metadata, ``batch_size``
        rows at a time (rows ``offset`` to ``offset + limit`` of the dataset order). Memory is
        bounded by the batch size plus 13 bytes a row of the dataset (where each row's vector
        lies, found by one scan of the keys up front), never by the vectors' size.
        """
        layer = check_entry(e, layer, allow_partial)
        cols = columns if columns is not None else S.ROW_COLUMNS
        if "item_key" not in cols:
            cols = ["item_key", *cols]
        vds = self.vectors.get(e.model_hash)  # one version for the map and the reads
        src, n_tokens, truncated = row_sources(vds, self.rows.keys(e.dataset_hash))
        if not allow_partial and (src < 0).any():
            raise EmbrmError(f"{int((src < 0).sum())} rows of {e.dataset_name} have no vector under "
                             f"{e.model_name}; re-run the extraction")
        at = offset
        for batch in self.rows.iter(e.dataset_hash, cols, batch_size, offset, limit):
            part = slice(at, at + len(batch))
            at += len(batch)
            found = src[part] >= 0
            vectors = self.vectors.read_rows(e.model_hash, vds, layer, e.dim, e.dtype, src[part][found])
            if not found.all():
                batch = batch.filter(pa.array(found))
            yield EntryBatch(batch, vectors, n_tokens[part][found], truncated[part][found])


__all__ = ["Embeddings", "EntryBatch", "EntryReader", "check_entry", "embeddings_of", "row_sources"]
