"""What the service answers without the model, and how its computed vectors reach the store.

Three places hold vectors, asked in this order:

1. the **buffer**: vectors computed for online requests and not committed yet;
2. a **hot cache**: recently served or computed vectors, least recently used out,
   bounded in bytes;
3. the **store**, by point reads (:meth:`~embrm.store.vector_tables.VectorTables.point_read`), the
   same table ``embrm extract`` writes: an item computed here is cached for it, and the
   other way round.

A committer thread writes the buffer to the store every ``commit_items`` items or
``commit_seconds`` seconds through the store's own write path (build the table, commit
under the lock), records the items in the model's ``served`` entry so ``gc`` keeps them,
and flushes once more at shutdown. A SIGKILL loses only the buffer, which can be
computed again; the store never sees half a commit.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from embrm.serve.worker import ItemVectors
from embrm.store.vectors import build_vector_table

if TYPE_CHECKING:
    from embrm.serve.metrics import Metrics
    from embrm.serve.settings import Settings
    from embrm.store.base import Store

log = logging.getLogger("embrm.serve")


class ServiceCache:
    def __init__(self, store: Store, model_hash: str, model_name: str, model_config: dict[str, Any],
                 metrics: Metrics, settings: Settings, clip: Callable[[str, str], tuple[str, str]],
                 provenance: Mapping[str, str] | None = None):
        self.store, self.model_hash, self.model_name, self.model_config = store, model_hash, model_name, model_config
        # what online misses were computed with (versions, device, dtype, engine "service"):
        # recorded beside them as a dataset job's or `embrm extract`'s vectors are
        self.provenance = provenance
        self.clip = clip  # the served table keeps what was embedded, not a 30 MB input
        self.metrics = metrics
        self.commit_items, self.commit_seconds = settings.commit_items, settings.commit_seconds
        self.hot_bytes = settings.hot_bytes
        self._lock = threading.Lock()
        self._buffer: dict[str, tuple[str, str, ItemVectors]] = {}
        self._hot: OrderedDict[str, ItemVectors] = OrderedDict()
        self._hot_used = 0
        self._flush_lock = threading.Lock()  # one flush at a time
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="embrm-commit", daemon=True)

    # ---------------------------------------------------------------- lookups
    def memory(self, key: str) -> ItemVectors | None:
        """The buffer or the hot cache (no I/O); safe from any thread."""
        with self._lock:
            got = self._buffer.get(key)
            if got is not None:
                return got[2]
            hit = self._hot.get(key)
            if hit is not None:
                self._hot.move_to_end(key)
            return hit

    def lookup(self, keys: list[str]) -> dict[str, ItemVectors]:
        """Every key that memory or the store has a vector for (blocking: run it in a thread)."""
        found: dict[str, ItemVectors] = {}
        rest = []
        for k in dict.fromkeys(keys):
            hit = self.memory(k)
            if hit is not None:
                found[k] = hit
            else:
                rest.append(k)
        if rest and self.store.vector_info(self.model_hash) is not None:
            got = self.store.read_vectors(self.model_hash, rest)
            for i in np.nonzero(got.found)[0].tolist():
                iv = ItemVectors({layer: v[i] for layer, v in got.vectors.items()}, int(got.n_tokens[i]),
                                 bool(got.truncated[i]))
                found[rest[i]] = iv
                self._remember(rest[i], iv)
        return found

    def _remember(self, key: str, iv: ItemVectors) -> None:
        size = sum(v.nbytes for v in iv.vectors.values()) + 64
        with self._lock:
            if key in self._hot:
                self._hot.move_to_end(key)
                return
            self._hot[key] = iv
            self._hot_used += size
            while self._hot_used > self.hot_bytes and self._hot:
                _, old = self._hot.popitem(last=False)
                self._hot_used -= sum(v.nbytes for v in old.vectors.values()) + 64

    # ------------------------------------------------------------- computed
    def computed(self, keys: list[str], prompts: list[str], responses: list[str], results: list[ItemVectors],
                 online: bool) -> None:
        """The model thread's callback, before its callers' futures resolve: online
        results wait in the buffer for the committer; a job commits its own windows."""
        for k, iv in zip(keys, results):
            self._remember(k, iv)
        if not online:
            return
        with self._lock:
            for k, p, r, iv in zip(keys, prompts, responses, results):
                self._buffer[k] = (p, r, iv)
            full = len(self._buffer) >= self.commit_items
        if full:
            self._wake.set()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._buffer)

    def flush(self) -> int:
        """Commit the buffer now; returns the items written."""
        with self._flush_lock:
            return self._flush()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Flush, then hold the committer off (``gc`` runs in here)."""
        with self._flush_lock:
            self._flush()
            yield

    def _flush(self) -> int:
        with self._lock:
            items = dict(self._buffer)
        if not items:
            return 0
        keys = list(items)
        ivs = [items[k][2] for k in keys]
        layers = list(ivs[0].vectors)
        data = build_vector_table(keys, {layer: np.stack([iv.vectors[layer] for iv in ivs]) for layer in layers},
                                  np.array([iv.n_tokens for iv in ivs]), np.array([iv.truncated for iv in ivs]),
                                  expect=self.store.vector_info(self.model_hash), provenance=self.provenance)
        self.store.commit_vectors(self.model_hash, data)
        texts = [self.clip(items[k][0], items[k][1]) for k in keys]
        self.store.record_served(self.model_hash, self.model_name, self.model_config, keys,
                      [p for p, _ in texts], [r for _, r in texts])
        with self._lock:
            for k in keys:
                if self._buffer.get(k) is items[k]:
                    del self._buffer[k]
        self.metrics.committed.inc(len(keys))
        return len(keys)

    # ----------------------------------------------------------- committer
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> int:
        """Stop the committer and flush what is left (SIGTERM lands here)."""
        self._stop = True
        self._wake.set()
        self._thread.join(60)
        return self.flush()

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop:
            self._wake.wait(timeout=max(0.05, self.commit_seconds - (time.monotonic() - last)))
            self._wake.clear()
            if self._stop:
                return
            if self.pending and (self.pending >= self.commit_items or time.monotonic() - last >= self.commit_seconds):
                try:
                    self.flush()
                except Exception:  # the store is busy or gone: keep the buffer, try again later
                    log.exception("committing %d served vectors failed; keeping them to try again", self.pending)
                last = time.monotonic()
            elif not self.pending:
                last = time.monotonic()
