"""Fast loads: store entry -> numpy arrays in dataset order.

Every trainer goes through :func:`load`, so it has to be close to ``np.load`` speed.
Two things make it so:

* **The cold path never touches Python objects.** The layer column is scanned in
  record batches; each FixedSizeList batch is viewed as its flat float buffer and copied
  (or scattered, when the table's order differs from the dataset's) straight into one
  preallocated array.
* **A materialisation keyed by table version.** The finished array is saved as a
  ``.npy`` file named after the vector and dataset tables' versions. The next load of
  the same versions is one ``np.load`` (optionally memory-mapped). Any write to either
  table bumps its version, so a stale file can never be read; the LanceDB tables stay
  the source of truth, and ``gc`` removes files of old versions.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embrm.errors import EmbrmError
from embrm.store import schema as S
from embrm.store.keys import short
from embrm.store.store import Entry, Store

ROW_COLUMNS = ["item_key", "prompt_id", "response_index", "role", "label", "reward"]


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
    item_key: list[str] = field(repr=False, default_factory=list)

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
        """``(pairs, 2, D)`` with the chosen response first, and the pair's prompt ids."""
        if self.kind != "pairwise":
            raise EmbrmError(f"entry is {self.kind}, not pairwise; use multi() or pointwise()")
        order = np.lexsort((self.response_index, self.prompt_id))
        v = self.vectors[order].reshape(-1, 2, self.dim)
        role = self.role[order].reshape(-1, 2)
        swap = role[:, 0] != "chosen"
        v[swap] = v[swap][:, ::-1]
        return v, self.prompt_id[order].reshape(-1, 2)[:, 0]

    def pointwise(self) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, D)`` vectors and one target per row: the label, else the reward."""
        y = np.where(np.isnan(self.label), self.reward, self.label)
        return self.vectors, y


def _versions(store: Store, e: Entry) -> tuple[int, int]:
    vt = store.table(S.vector_table(e.model_hash))
    dt = store.table(S.dataset_table(e.dataset_hash))
    return int(vt.version), int(dt.version)


def _cache_stem(e: Entry, layer: int) -> str:
    return f"{e.model_hash[:16]}_{e.dataset_hash[:16]}_{S.layer_column(layer)}"


def load(
    store: Store,
    model: str,
    dataset: str,
    layer: int | None = None,
    mmap: bool = False,
    allow_partial: bool = False,
    use_cache: bool = True,
) -> Embeddings:
    """Load one entry's vectors and rows in dataset order.

    ``layer`` defaults to the first extracted layer. A partial entry (an extraction that
    has not finished) is refused unless ``allow_partial``, which returns the rows that
    have vectors.
    """
    e = store.resolve(model, dataset)
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
    rows = store.dataset_rows(e.dataset_hash, ROW_COLUMNS)
    vver, dver = _versions(store, e)
    cdir = store.cache_dir
    stem = _cache_stem(e, layer)
    vec_path = cdir / f"{stem}_v{vver}_d{dver}.npy"
    meta_path = cdir / f"{stem}_v{vver}_d{dver}.meta.npz"
    if use_cache and vec_path.exists() and meta_path.exists():
        vectors = np.load(vec_path, mmap_mode="r" if mmap else None)
        with np.load(meta_path) as m:
            n_tokens, truncated, present = m["n_tokens"], m["truncated"], m["present"]
    else:
        vectors, n_tokens, truncated, present = _read_vectors(store, e, layer, rows.column("item_key"))
        if use_cache:
            _save_cache(cdir, stem, vec_path, meta_path, vectors, n_tokens, truncated, present)
            if mmap:
                vectors = np.load(vec_path, mmap_mode="r")
    if not present.all():
        if not allow_partial:
            raise EmbrmError(
                f"{int((~present).sum())} rows of {e.dataset_name} have no vector under "
                f"{e.model_name}; re-run the extraction"
            )
        rows = rows.filter(pa.array(present))
    return _embeddings(vectors, rows, e, layer, n_tokens, truncated)


def _embeddings(vectors: np.ndarray, rows: pa.Table, e: Entry, layer: int,
                n_tokens: np.ndarray, truncated: np.ndarray) -> Embeddings:
    def f64(name: str) -> np.ndarray:
        return rows.column(name).to_numpy(zero_copy_only=False).astype(np.float64)

    return Embeddings(
        vectors=vectors,
        kind=e.kind,
        layer=layer,
        entry=e,
        prompt_id=rows.column("prompt_id").to_numpy(),
        response_index=rows.column("response_index").to_numpy(),
        role=np.asarray(rows.column("role").to_pylist(), dtype=object),
        label=f64("label"),
        reward=f64("reward"),
        n_tokens=n_tokens,
        truncated=truncated,
        item_key=rows.column("item_key").to_pylist(),
    )


def _read_vectors(store: Store, e: Entry, layer: int, row_keys: pa.ChunkedArray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scan the layer column once into a preallocated array in dataset order."""
    ds = store.table(S.vector_table(e.model_hash)).to_lance()
    col = S.layer_column(layer)
    meta = ds.to_table(columns=["item_key", "n_tokens", "truncated"])
    idx = pc.index_in(row_keys, value_set=meta.column("item_key").combine_chunks())
    present = pc.is_valid(idx).to_numpy(zero_copy_only=False)
    src = pc.fill_null(idx, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    np_dtype = np.float16 if e.dtype == "float16" else np.float32
    n = int(present.sum())
    out = np.empty((n, e.dim), dtype=np_dtype)
    src_present = src[present]
    n_tokens = meta.column("n_tokens").to_numpy()[src_present]
    truncated = meta.column("truncated").to_numpy(zero_copy_only=False)[src_present]
    identity = n == ds.count_rows() and np.array_equal(src_present, np.arange(n))
    if identity:  # the table holds exactly this dataset, in order: copy batches straight in
        at = 0
        for batch in ds.to_batches(columns=[col], batch_size=65536):
            flat = batch.column(0).flatten().to_numpy(zero_copy_only=True)
            m = len(flat) // e.dim
            out[at:at + m] = flat.reshape(m, e.dim)
            at += m
        return out, n_tokens, truncated, present
    # general case: scatter each batch into the rows that refer to it
    order = np.argsort(src_present, kind="stable")
    sorted_src = src_present[order]
    start = 0
    for batch in ds.to_batches(columns=[col], batch_size=65536):
        flat = batch.column(0).flatten().to_numpy(zero_copy_only=True)
        m = len(flat) // e.dim
        block = flat.reshape(m, e.dim)
        lo, hi = np.searchsorted(sorted_src, [start, start + m])
        if hi > lo:
            dst = order[lo:hi]
            out[dst] = block[sorted_src[lo:hi] - start]
        start += m
    return out, n_tokens, truncated, present


def _save_cache(cdir: Path, stem: str, vec_path: Path, meta_path: Path, vectors: np.ndarray,
                n_tokens: np.ndarray, truncated: np.ndarray, present: np.ndarray) -> None:
    """Write the materialisation atomically; a failure to cache never fails a load."""
    try:
        cdir.mkdir(parents=True, exist_ok=True)
        for old in cdir.glob(f"{stem}_v*"):
            old.unlink(missing_ok=True)
        for path, writer in ((meta_path, lambda f: np.savez(f, n_tokens=n_tokens, truncated=truncated, present=present)),
                             (vec_path, lambda f: np.save(f, vectors))):
            fd, tmp = tempfile.mkstemp(dir=cdir, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                writer(f)
            os.replace(tmp, path)
    except OSError:
        pass


def clear_stale_cache(store: Store) -> int:
    """Remove materialisations that no current entry and table version can use."""
    cdir = store.cache_dir
    if not cdir.exists():
        return 0
    keep: set[str] = set()
    for e in store.entries():
        if not e.layers or not store.has_table(S.vector_table(e.model_hash)):
            continue
        vver, dver = _versions(store, e)
        for layer in e.layers:
            base = f"{_cache_stem(e, layer)}_v{vver}_d{dver}"
            keep |= {f"{base}.npy", f"{base}.meta.npz"}
    removed = 0
    for p in cdir.iterdir():
        if p.name not in keep:
            p.unlink(missing_ok=True)
            removed += 1
    return removed


def cache_path_for(store: Store, model: str, dataset: str, layer: int) -> Path:
    """The materialisation file a load of this entry and layer would use now."""
    e = store.resolve(model, dataset)
    vver, dver = _versions(store, e)
    return store.cache_dir / f"{_cache_stem(e, layer)}_v{vver}_d{dver}.npy"


__all__ = ["Embeddings", "load", "clear_stale_cache", "cache_path_for", "short"]
