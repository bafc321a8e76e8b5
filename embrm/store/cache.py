"""The local materialisation cache of loads: ``.npy`` copies keyed by table versions.

A load of an entry can be saved as a ``.npy`` file named after the vector and dataset
tables' versions; the next load of the same versions is one ``np.load`` (optionally
memory-mapped). Any write bumps a version, so a stale file is never read, and the
LanceDB tables stay the source of truth.

The copy costs disk, and a cold load of a local store already reads at ``np.load``
speed (:mod:`embrm.store.scan`), so the cache is opt-in, local and bounded:

* ``$EMBRM_CACHE_SIZE`` turns it on and bounds all of it (e.g. ``4G``; default ``0``,
  off); the least recently used files go first when a new one would exceed the bound;
* it lives in ``$EMBRM_CACHE`` (default ``~/.cache/embrm``), one folder per store URI,
  never inside the store (an object store gets no local files in it);
* ``load(..., mmap=True)`` writes the file it maps even when the cache is off: a memory
  map needs one.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_SIZE = 0
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """'4G', '512M', '0' -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text.upper())
    if not m:
        from embrm.errors import EmbrmError

        raise EmbrmError(f"EMBRM_CACHE_SIZE={text!r} is not a size; use e.g. 4G, 512M or 0 (off)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def cache_root() -> Path:
    env = os.environ.get("EMBRM_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "embrm"


def cache_limit() -> int:
    return parse_size(os.environ.get("EMBRM_CACHE_SIZE", "")) if os.environ.get("EMBRM_CACHE_SIZE") else DEFAULT_SIZE


@dataclass(frozen=True)
class Materialised:
    """A cached load: vectors in dataset order and the per-row metadata."""

    vectors: np.ndarray
    n_tokens: np.ndarray
    truncated: np.ndarray
    present: np.ndarray


class LoadCache:
    """The cache folder of one store."""

    def __init__(self, store_uri: str, root: Path | None = None, limit: int | None = None):
        self.dir = (root or cache_root()) / hashlib.sha256(store_uri.encode()).hexdigest()[:16]
        self.limit = cache_limit() if limit is None else limit

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    @staticmethod
    def stem(model_hash: str, dataset_hash: str, layer_column: str) -> str:
        return f"{model_hash[:16]}_{dataset_hash[:16]}_{layer_column}"

    @staticmethod
    def name(stem: str, versions: tuple[int, int]) -> str:
        return f"{stem}_v{versions[0]}_d{versions[1]}"

    def paths(self, stem: str, versions: tuple[int, int]) -> tuple[Path, Path]:
        base = self.dir / self.name(stem, versions)
        return base.with_name(base.name + ".npy"), base.with_name(base.name + ".meta.npz")

    def get(self, stem: str, versions: tuple[int, int], mmap: bool = False) -> Materialised | None:
        if not (self.enabled or mmap):
            return None
        vec, meta = self.paths(stem, versions)
        if not (vec.exists() and meta.exists()):
            return None
        try:
            vectors = np.load(vec, mmap_mode="r" if mmap else None)
            with np.load(meta) as m:
                out = Materialised(vectors, m["n_tokens"], m["truncated"], m["present"])
            os.utime(vec)  # least recently used goes first
        except (OSError, ValueError, KeyError):  # a file cut short by a full disk or a crash
            return None
        return out

    def put(self, stem: str, versions: tuple[int, int], m: Materialised, force: bool = False) -> Path | None:
        """Save atomically; a failure to cache never fails a load. Returns the .npy path.
        ``force`` writes it even when the cache is off or too small (a memory map needs a file)."""
        size = m.vectors.nbytes
        if not force and (not self.enabled or size > self.limit):
            return None
        vec, meta = self.paths(stem, versions)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            for old in self.dir.glob(f"{stem}_v*"):  # older versions of the same entry
                old.unlink(missing_ok=True)
            self._evict(max(0, self.limit - size))
            for path, write in ((meta, lambda f: np.savez(f, n_tokens=m.n_tokens, truncated=m.truncated,
                                                          present=m.present)),
                                (vec, lambda f: np.save(f, m.vectors))):
                fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".tmp")
                with os.fdopen(fd, "wb") as f:
                    write(f)
                os.replace(tmp, path)
        except OSError:
            return None
        return vec

    def _evict(self, keep_bytes: int) -> None:
        """Delete least recently used .npy files (and their metadata) across every store's
        folder until the cache holds at most ``keep_bytes``."""
        root = self.dir.parent
        files = [p for p in root.glob("*/*.npy")]
        stats = []
        for p in files:
            try:
                st = p.stat()
            except OSError:
                continue
            stats.append((st.st_mtime, st.st_size, p))
        total = sum(s for _, s, _ in stats)
        for _, size, p in sorted(stats):
            if total <= keep_bytes:
                break
            p.unlink(missing_ok=True)
            p.with_name(p.name[: -len(".npy")] + ".meta.npz").unlink(missing_ok=True)
            total -= size

    def clear_stale(self, keep: set[str]) -> int:
        """Remove this store's files whose name (without suffix) is not in ``keep``."""
        if not self.dir.exists():
            return 0
        removed = 0
        for p in self.dir.iterdir():
            base = p.name.split(".", 1)[0]
            if base not in keep:
                p.unlink(missing_ok=True)
                removed += 1
        return removed
