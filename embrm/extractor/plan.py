"""Planning an extraction: what every engine does before the first forward pass.

1. Read the dataset once: fingerprint it (content hash of the normalised rows, in
   order), learn its kind, and key every row (item key = hash of the exact texts).
2. Against the model fingerprint, find the distinct item keys the store lacks, from
   whichever dataset they were computed for.
3. Register: write the dataset's rows table (idempotent) and open a catalog entry.

The local and Ray engines and the service's dataset jobs all start from
:func:`plan_extraction`, so keying and fingerprints exist once (``extract --store
http://...`` scans here and uploads; the service's job then plans the same way).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from embrm.errors import EmbrmError
from embrm.extractor.datasets import DatasetSpec, dataset_kind, iter_rows
from embrm.store import DatasetHasher, item_key, row_batches

if TYPE_CHECKING:
    from embrm.extractor.embedder import Embedder
    from embrm.store.base import Store

KEY_CHUNK = 65536


def keyed(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Normalised rows -> rows of the store's row schema (position and item key added)."""
    for pos, r in enumerate(rows):
        yield {**r, "position": pos, "item_key": item_key(r["prompt"], r["response"])}


@dataclass
class DatasetScan:
    """A dataset read once: its fingerprint, kind and size, and every row's item key.

    Memory: the keys (32 bytes a row); ``rows`` re-reads the rows lazily when the rows
    table is written.
    """

    name: str
    source: dict[str, Any]
    kind: str
    dataset_hash: str
    n_rows: int
    skipped: int
    keys: pa.ChunkedArray
    rows: Callable[[], Iterator[dict[str, Any]]]


def scan_rows(rows: Callable[[], Iterator[dict[str, Any]]], name: str, source: dict[str, Any], kind: str,
              stats: dict[str, int] | None = None) -> DatasetScan:
    """Fingerprint and key normalised rows (``rows()`` must give the same rows each call)."""
    hasher = DatasetHasher()
    chunks: list[pa.Array] = []
    buf: list[str] = []
    for r in rows():
        hasher.update(r)
        buf.append(item_key(r["prompt"], r["response"]))
        if len(buf) == KEY_CHUNK:
            chunks.append(pa.array(buf, pa.string()))
            buf = []
    chunks.append(pa.array(buf, pa.string()))
    if hasher.count == 0:
        raise EmbrmError(f"dataset {name} has no usable rows")
    skipped = (stats or {}).get("skipped", 0)
    return DatasetScan(name, source, kind, hasher.hexdigest(), hasher.count, skipped,
                       pa.chunked_array(chunks, pa.string()), lambda: keyed(rows()))


def scan_dataset(spec: DatasetSpec) -> DatasetScan:
    """Read a dataset source once (see :class:`DatasetScan`)."""
    kind = dataset_kind(spec)
    stats: dict[str, int] = {}
    return scan_rows(lambda: iter_rows(spec, stats), spec.name, spec.display(), kind, stats)


def stored_scan(store: Store, dataset_hash: str, name: str, kind: str, source: dict[str, Any]) -> DatasetScan:
    """The scan of a dataset whose rows table is in the store already (an upload to the
    service): keys from the table, no source file to read again."""
    keys = pa.chunked_array([b.column("item_key") for b in store.iter_rows(dataset_hash, ["item_key"], KEY_CHUNK)],
                            pa.string())

    def rows() -> Iterator[dict[str, Any]]:
        for b in store.iter_rows(dataset_hash):
            yield from b.to_pylist()

    return DatasetScan(name, source, kind, dataset_hash, len(keys), 0, keys, rows)


@dataclass
class ExtractionPlan:
    """A dataset scan against one model fingerprint: what is missing from the store."""

    data: DatasetScan
    model_hash: str
    model_name: str
    model_config: dict[str, Any]
    missing: pa.Array  # distinct item keys without a vector, in first-seen order

    @property
    def n_missing(self) -> int:
        return len(self.missing)

    def register(self, store: Store) -> None:
        """Write the dataset's rows table (idempotent) and open the catalog entry."""
        d = self.data
        store.write_rows(d.dataset_hash, row_batches(d.rows()), d.n_rows, d.kind)
        store.begin_entry(self.model_hash, self.model_name, self.model_config, d.dataset_hash, d.name,
                          d.source, d.kind, d.n_rows)


def plan_extraction(data: DatasetScan, embedder: Embedder, store: Store) -> ExtractionPlan:
    """The plan of ``data`` under ``embedder``'s fingerprint: the one way every engine
    (and the service's dataset jobs) starts. Loads no weights."""
    return ExtractionPlan(data, embedder.model_hash, embedder.model_name, embedder.catalog_config(),
                          store.missing_keys(embedder.model_hash, data.keys))
