"""One entry of any store, read for a copy or a bundle: its rows, its vectors as raw
vector-table rows (every layer, with their provenance ids), and digests of them.

* :class:`LanceSource` reads a local or object-store store's tables directly: the rows
  table in dataset order and the model's vector table in its stored order, keeping the
  rows whose keys are asked for (a sequential scan: a copy reads every wanted vector
  once, whichever order it was stored in).
* :class:`ServiceSource` reads an ``embrm serve`` through its existing Arrow routes: one
  pull of the entry per stored layer (with texts on the first), in dataset order, and
  the entry's provenance ids (``GET .../provenance``).

A key's **digest** is sha256 of the key and each stored layer's vector bytes, layers in
ascending order; an entry's **checksum** is sha256 of its keys' digests in key order.
Both sides of a copy compute it from what they hold, so equal checksums mean equal bits.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embrm.errors import EmbrmError
from embrm.store import schema as S
from embrm.store.provenance import COLUMN as PROV_COLUMN
from embrm.store.vectors import VectorInfo

if TYPE_CHECKING:
    from embrm.store.base import Store
    from embrm.store.catalog import Entry
    from embrm.store.lance_store import LanceStore
    from embrm.store.service import ServiceStore

SCAN_ROWS = 8192
#: A service entry of one layer up to this many vector bytes is pulled once for a copy.
KEEP_PULLED_BYTES = 1 << 30


def layer_arrays(t: pa.Table, info: VectorInfo) -> dict[int, np.ndarray]:
    """layer -> (n, dim) numpy view of a vector table's layer columns."""
    np_dtype = np.float16 if info.dtype == "float16" else np.float32
    out = {}
    for layer in info.layers:
        col = t.column(S.layer_column(layer))  # one chunk (a slice, a scan's batch) is read in place
        col = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
        flat = col.flatten().to_numpy(zero_copy_only=False)
        out[layer] = np.ascontiguousarray(flat, dtype=np_dtype).reshape(len(t), info.dim)
    return out


def digests(t: pa.Table, info: VectorInfo) -> dict[str, bytes]:
    """key -> digest of every row of a vector table (see the module docstring).

    Each layer is one contiguous buffer, hashed a row at a time through slices of a
    byte memoryview (no numpy row object per row)."""
    arrays = layer_arrays(t, info)
    views = [memoryview(np.ascontiguousarray(arrays[layer])).cast("B") for layer in sorted(arrays)]
    width = info.dim * (2 if info.dtype == "float16" else 4)
    sha = hashlib.sha256
    out = {}
    for i, k in enumerate(t.column("item_key").to_pylist()):
        h = sha(k.encode())
        for v in views:
            h.update(v[i * width:(i + 1) * width])
        out[k] = h.digest()
    return out


def checksum(keyed: dict[str, bytes]) -> str:
    """An entry's checksum: its keys' digests in key order."""
    h = hashlib.sha256()
    for k in sorted(keyed):
        h.update(keyed[k])
    return h.hexdigest()


class EntrySource:
    """The parts of one entry a copy or a bundle reads."""

    entry: Entry
    info: VectorInfo
    #: key -> digest of every vector, where the source computed them already (a checked bundle)
    known_digests: dict[str, bytes] | None = None

    def rows(self) -> Iterator[pa.Table]:
        """The dataset's rows (row schema), in dataset order."""
        raise NotImplementedError

    def keys(self) -> pa.Array:
        """The dataset's distinct item keys."""
        raise NotImplementedError

    def vectors(self, want: pa.Array | None = None) -> Iterator[pa.Table]:
        """Raw vector-table rows (every layer, provenance ids) of the keys in ``want``
        (default: every key of the entry), each key once, in batches."""
        raise NotImplementedError

    def records(self) -> dict[str, dict[str, str]]:
        """The provenance facts of the ids these vectors carry."""
        raise NotImplementedError


def source_of(store: Store, model: str, dataset: str) -> EntrySource:
    """The reader of one entry of ``store``, whichever backend it is."""
    from embrm.store.lance_store import LanceStore
    from embrm.store.service import ServiceStore

    if isinstance(store, LanceStore):
        return LanceSource(store, store.resolve(model, dataset))
    if isinstance(store, ServiceStore):
        return ServiceSource(store, store.resolve(model, dataset))
    raise EmbrmError(f"cannot read entries of {store!r} for a copy")


def _unique(keys: pa.Array | pa.ChunkedArray) -> pa.Array:
    u = pc.unique(keys)
    return u.combine_chunks() if isinstance(u, pa.ChunkedArray) else u


class LanceSource(EntrySource):
    """An entry of a Lance store, read from its tables."""

    def __init__(self, store: LanceStore, e: Entry):
        self.store, self.entry = store, e
        info = store.vectors.info(e.model_hash)
        if info is None:
            raise EmbrmError(f"entry {e.model_name} x {e.dataset_name} has no vectors in {store.uri}")
        self.info = info
        self._keys: pa.Array | None = None

    def rows(self) -> Iterator[pa.Table]:
        for b in self.store.rows.iter(self.entry.dataset_hash, S.ROW_SCHEMA.names, SCAN_ROWS):
            yield pa.Table.from_batches([b]).select(S.ROW_SCHEMA.names).cast(S.ROW_SCHEMA)

    def keys(self) -> pa.Array:
        if self._keys is None:
            self._keys = _unique(self.store.rows.keys(self.entry.dataset_hash))
        return self._keys

    def vectors(self, want: pa.Array | None = None) -> Iterator[pa.Table]:
        return scan_vectors(self.store, self.entry.model_hash, self.keys() if want is None else want)

    def records(self) -> dict[str, dict[str, str]]:
        return self.store.provenance.facts()


def scan_vectors(store: LanceStore, model_hash: str, want: pa.Array) -> Iterator[pa.Table]:
    """The raw rows of a model's vector table whose keys are in ``want``, in stored order
    (one sequential scan), with a provenance column even where the table has none."""
    if not len(want):
        return
    ds = store.vectors.open(model_hash)
    if ds is None:
        return
    for b in ds.to_batches(batch_size=SCAN_ROWS):
        t = pa.Table.from_batches([b])
        t = t.filter(pc.is_in(t.column("item_key"), value_set=want))
        if len(t):
            if PROV_COLUMN not in t.schema.names:  # a table of an older embrm
                t = t.append_column(pa.field(PROV_COLUMN, pa.string()), pa.nulls(len(t), pa.string()))
            yield t


class ServiceSource(EntrySource):
    """An entry of an ``embrm serve``, read through its Arrow pulls."""

    def __init__(self, store: ServiceStore, e: Entry):
        self.store, self.entry = store, e
        if not e.layers:
            raise EmbrmError(f"entry {e.model_name} x {e.dataset_name} has no vectors at {store.uri}")
        self.info = VectorInfo(e.dim, e.dtype, tuple(e.layers))
        self._prov: dict[str, Any] | None = None
        self._pulled: list[pa.RecordBatch] | None = None  # the one layer's pull, kept by rows()

    def _pull(self, layer: int, texts: bool) -> Iterator[pa.RecordBatch]:
        with self.store._stream(self.entry, layer, allow_partial=True, texts=texts) as resp:
            yield from pa.ipc.open_stream(resp)

    def rows(self) -> Iterator[pa.Table]:
        """The rows, from a pull of the first layer with texts. That pull carries the
        layer's vectors too: an entry of one layer up to ``KEEP_PULLED_BYTES`` keeps them
        (key, token facts, vector), so :meth:`vectors` need not pull the same bytes again."""
        e = self.entry
        keep = len(e.layers) == 1 and e.n_rows * e.dim * (2 if e.dtype == "float16" else 4) <= KEEP_PULLED_BYTES
        kept: list[pa.RecordBatch] = []
        for b in self._pull(e.layers[0], texts=True):
            if keep:
                kept.append(b.select(["item_key", "n_tokens", "truncated", "vector"]))
            yield pa.Table.from_batches([b]).select(S.ROW_SCHEMA.names).cast(S.ROW_SCHEMA)
        if keep:  # the whole pull was read
            self._pulled = kept

    def provenance(self) -> dict[str, Any]:
        if self._prov is None:
            self._prov = self.store.entry_provenance(self.entry.model_hash, self.entry.dataset_hash, ids=True)
        return self._prov

    def keys(self) -> pa.Array:
        return pa.array(list(self.provenance()["ids"]), pa.string())

    def records(self) -> dict[str, dict[str, str]]:
        return {p["id"]: p["facts"] for p in self.provenance()["provenance"] if p.get("facts")}

    def vectors(self, want: pa.Array | None = None) -> Iterator[pa.Table]:
        """Every layer's pull side by side (the same rows in the same order), keeping each
        wanted key's first row (a partial entry's rows without vectors are skipped)."""
        want = self.keys() if want is None else want
        if not len(want):
            return
        ids = self.provenance()["ids"]
        wanted = set(want.to_pylist())
        pulls = [iter(self._pulled)] if self._pulled is not None else \
            [self._pull(layer, texts=False) for layer in self.info.layers]
        seen: set[str] = set()
        for parts in zip(*pulls):
            t0 = pa.Table.from_batches([parts[0]])
            keys = t0.column("item_key").to_pylist()
            keep = [i for i, k in enumerate(keys) if k in ids and k in wanted and k not in seen]
            seen.update(keys[i] for i in keep)
            if not keep:
                continue
            idx = pa.array(keep)
            cols = [t0.column("item_key").take(idx), t0.column("n_tokens").take(idx),
                    t0.column("truncated").take(idx)]
            cols += [pa.Table.from_batches([p]).column("vector").take(idx) for p in parts]
            cols.append(pa.array([ids[keys[i]] or None for i in keep], pa.string()))
            yield pa.Table.from_arrays(cols, schema=self.info.schema())
