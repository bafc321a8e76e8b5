"""``embrm store copy``: entries (catalog entry, rows table, every stored layer of the
vectors, their provenance) and published reward models from one store to another.

A copy of one entry, from any store (:mod:`embrm.store.transfer` reads it) into a store
this process writes:

1. **Check before writing.** The target's vector table must fit (dim, dtype, layers).
   Keys the target already holds under the same model are compared, digest against
   digest, with the source's: a key stored with other vectors there is a conflict, and
   the copy is refused naming the keys, with nothing written. Never silently mixed.
2. **Write like an extraction.** The rows table (idempotent), the catalog entry, then
   only the keys the target lacks, a window at a time, each window one commit through
   the store's own writer (which skips keys stored meanwhile, so a concurrent extraction
   or copy into the same entry leaves no duplicate), then :meth:`finish_entry`. A copy
   killed at any point leaves whole commits; a rerun sends only what is still missing.
3. **Verify.** Both sides' counts, and a checksum of the entry's vectors in key order
   computed on each side from what it holds (:func:`~embrm.store.transfer.checksum`).
"""
from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from embrm.errors import EmbrmError
from embrm.store.keys import short
from embrm.store.provenance import COLUMN as PROV_COLUMN
from embrm.store.provenance import with_records
from embrm.store.service import ServiceStore
from embrm.store.transfer import EntrySource, ServiceSource, checksum, digests, scan_vectors, source_of

if TYPE_CHECKING:
    from embrm.store.base import Store

SHOWN_KEYS = 5
#: Vectors sent as one commit: fewer, larger commits (one object-store merge or one
#: service request each) at a bounded cost of work lost to a crash.
COMMIT_BYTES = 32 << 20


@dataclass
class CopyResult:
    """What one entry's copy did and what its verification found."""

    model: str
    dataset: str
    copied: int  # vectors sent
    present: int  # vectors the target held already (identical)
    bytes: int
    vectors: int  # vectors of the entry on each side after the copy
    checksum: str

    def line(self) -> str:
        what = f"copied {self.copied} vectors ({self.bytes / 1e6:.1f} MB)" if self.copied else \
            "nothing to copy: the target holds every vector already"
        return (f"{self.model} x {self.dataset}: {what}; verified {self.vectors} vectors on both sides, "
                f"checksum {self.checksum[:16]}")


def target_of(store: Store, purpose: str) -> Any:
    """The store as a target of the write protocol (local disk, object storage, or a
    service through its copy routes); another backend refuses ``purpose`` in one line."""
    from embrm.store.lance_store import LanceStore

    if not isinstance(store, (LanceStore, ServiceStore)):
        store.refuse(purpose, "copy into a local path, s3://... or an embrm service")
    return store


def target_vectors(target: Any, e: Any, want: pa.Array) -> Iterator[pa.Table]:
    """The target's raw vector rows of ``want`` keys: a Lance store's table scanned, a
    service's entry pulled (every layer; the entry must be registered there)."""
    from embrm.store.service import ServiceStore

    if not isinstance(target, ServiceStore):
        yield from scan_vectors(target, e.model_hash, want)
        return
    try:
        there = target.resolve(e.model_hash, e.dataset_hash)
    except EmbrmError:
        return
    if there.layers:
        yield from ServiceSource(target, there).vectors(want)


def conflicts(source: EntrySource, target: Any, present: pa.Array) -> dict[str, bytes]:
    """Digests of the ``present`` keys on the source; raises naming the keys whose vectors
    differ on the target."""
    info = source.info
    theirs: dict[str, bytes] = {}
    for t in target_vectors(target, source.entry, present):
        theirs.update(digests(t, info))
    ours: dict[str, bytes] = {}
    for t in source.vectors(present):
        ours.update(digests(t, info))
    bad = sorted(k for k, d in ours.items() if theirs.get(k) != d)
    if bad:
        e = source.entry
        shown = ", ".join(bad[:SHOWN_KEYS]) + (f" and {len(bad) - SHOWN_KEYS} more" if len(bad) > SHOWN_KEYS else "")
        raise EmbrmError(f"{target.uri} holds other vectors for {len(bad)} item key(s) of {e.model_name} x "
                         f"{e.dataset_name} under the same model fingerprint ({shown}); nothing was copied: "
                         "remove that entry there (`embrm store rm`, then `gc`) or copy into another store")
    return ours


def _fits(source: EntrySource, target: Any) -> None:
    have, info, e = target.vector_info(source.entry.model_hash), source.info, source.entry
    if have is not None and (have.dim, have.dtype, set(have.layers)) != (info.dim, info.dtype, set(info.layers)):
        raise EmbrmError(f"{target.uri} stores model {short(e.model_hash)} as dim {have.dim} {have.dtype} layers "
                         f"{list(have.layers)}, the source as dim {info.dim} {info.dtype} layers {list(info.layers)}; "
                         "nothing was copied")


def copy_entry(src: Store, dst: Store, model: str, dataset: str, progress: bool = True) -> CopyResult:
    """Copy one entry (see the module docstring)."""
    target = target_of(dst, "copying an entry into it")
    return copy_from(source_of(src, model, dataset), target, progress)


def copy_from(source: EntrySource, target: Any, progress: bool = True) -> CopyResult:
    """Steps 1-3 of the module docstring, from any reader of one entry (a store's or a
    checked bundle's)."""
    e = source.entry
    _fits(source, target)
    keys = source.keys()
    missing = target.missing_keys(e.model_hash, keys)
    present = keys.filter(pc.invert(pc.is_in(keys, value_set=missing)))
    if isinstance(target, ServiceStore) and len(present):  # its vectors are read through the entry: register it
        _register(source, target)
    ours = conflicts(source, target, present)
    _register(source, target)
    copied, size = _send(source, target, missing, ours, progress)
    _finish(target, e.model_hash, e.dataset_hash)
    return verify_copy(source, target, ours, copied, len(present), size)


def _finish(target: Any, model_hash: str, dataset_hash: str) -> None:
    """Count and set the entry's status. A Lance target is not compacted here: a copy
    commits windows of ``COMMIT_BYTES``, already large fragments (compacting would write
    every vector a second time); ``embrm store gc`` compacts when asked."""
    from embrm.store.lance_store import LanceStore

    if isinstance(target, LanceStore):
        target.finish_entry(model_hash, dataset_hash, compact_vectors=False)
    else:
        target.finish_entry(model_hash, dataset_hash)


def _register(source: EntrySource, target: Any) -> None:
    """The target's rows table (idempotent) and catalog entry (kept if it exists)."""
    e = source.entry
    target.write_rows(e.dataset_hash, source.rows(), e.n_rows, e.kind)
    target.begin_entry(e.model_hash, e.model_name, e.model_config, e.dataset_hash, e.dataset_name,
                       e.dataset_source, e.kind, e.n_rows)


def _send(source: EntrySource, target: Any, missing: pa.Array, ours: dict[str, bytes],
          progress: bool) -> tuple[int, int]:
    """Commit the source's vectors of the ``missing`` keys a window at a time; returns
    (vectors added, bytes sent). ``ours`` gains their digests."""
    from tqdm import tqdm

    e, records = source.entry, source.records()
    bar = tqdm(total=len(missing), unit="vec", desc=f"copy {e.dataset_name}"[:40], disable=not progress or not
               len(missing), leave=False)
    copied = size = 0
    pending: list[pa.Table] = []

    def commit() -> int:
        t = pa.concat_tables(pending)
        pending.clear()
        ids = {i for i in pc.unique(t.column(PROV_COLUMN)).to_pylist() if i}
        return target.commit_vectors(e.model_hash, with_records(t, {i: records[i] for i in ids if i in records}))

    try:
        for t in source.vectors(missing):
            ours.update(digests(t, source.info) if source.known_digests is None else
                        {k: source.known_digests[k] for k in t.column("item_key").to_pylist()})
            pending.append(t.replace_schema_metadata(None))
            if sum(p.nbytes for p in pending) >= COMMIT_BYTES:
                copied += commit()
            size += t.nbytes
            bar.update(len(t))
            bar.set_postfix(MB=f"{size / 1e6:,.1f}", refresh=False)
        if pending:
            copied += commit()
    finally:
        bar.close()
    return copied, size


def verify_copy(source: EntrySource, target: Any, ours: dict[str, bytes], copied: int, present: int,
                size: int) -> CopyResult:
    """Counts and checksums of the entry's vectors, each side from what it holds."""
    e = source.entry
    want = pa.array(sorted(ours), pa.string())
    theirs: dict[str, bytes] = {}
    for t in target_vectors(target, e, want):
        theirs.update(digests(t, source.info))
    mine, other = checksum(ours), checksum(theirs)
    if len(theirs) != len(ours) or mine != other:
        lost = len(set(ours) - set(theirs))
        differ = sorted(k for k in ours if k in theirs and theirs[k] != ours[k])
        why = (f"; {len(differ)} key(s) hold other vectors there (e.g. {differ[0]}), stored by another writer "
               "meanwhile: the entry now mixes two computations, `embrm store show` lists them") if differ else \
            "; run the copy again"
        raise EmbrmError(f"verification failed for {e.model_name} x {e.dataset_name}: the source holds {len(ours)} "
                         f"vectors (checksum {mine[:16]}), the target {len(theirs)} ({other[:16]}; {lost} missing)"
                         + why)
    return CopyResult(e.model_name, e.dataset_name, copied, present, size, len(ours), mine)


def copy_runs(src: Store, dst: Store) -> list[str]:
    """Publish in ``dst`` every reward model of ``src`` that ``dst`` lacks; returns their names."""
    have = {r["name"] for r in dst.runs()}
    done = []
    for r in src.runs():
        if r["name"] in have:
            continue
        with tempfile.TemporaryDirectory(prefix="embrm-copy-rm-") as tmp:
            dst.push_run(r["name"], src.pull_run(r["name"], Path(tmp) / "run"))
        done.append(r["name"])
    return done


def copy_store(src: Store, dst: Store, pairs: list[tuple[str, str]], everything: bool = False,
               rms: bool = False, progress: bool = True) -> dict[str, Any]:
    """``embrm store copy``: the entries named by (model, dataset) ``pairs`` (or, with
    ``everything``, all of ``src``'s) and, with ``rms``, the published reward models."""
    if src.uri == dst.uri:
        raise EmbrmError(f"--from and --to are the same store ({src.uri}); name another target")
    if everything:
        pairs = [(e.model_hash, e.dataset_hash) for e in src.entries() if e.layers]
    if not pairs and not rms:
        raise EmbrmError("name the entries to copy (MODEL DATASET ...), or pass --all or --rms")
    results = [copy_entry(src, dst, m, d, progress) for m, d in pairs]
    runs = copy_runs(src, dst) if rms else []
    return {"entries": results, "rms": runs}
