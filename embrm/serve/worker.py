"""The model thread: one thread owns torch and the model; everything else queues.

Requests hand it items (``submit``) and get futures back. It serves online requests
before dataset jobs, waits up to ``max_wait_ms`` for concurrent requests to pile up so
they share forward passes, and runs them through the extractor's own
:class:`~embrm.extractor.embedder.Embedder` (tokenisation, length-sorted token-budget
batches, pooling). Single flight: an item already queued or running is never queued
again; every caller asking for it waits on the same future.

Dataset jobs go in as whole windows; the thread splits a window into the Embedder's
forward batches (:meth:`~embrm.extractor.embedder.Embedder.batches`) and runs one at a
time, looking at the online queue between batches, so an interactive caller waits at
most one forward batch behind a big job.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from embrm.extractor.embedder import Embedder
    from embrm.serve.metrics import Metrics
    from embrm.serve.settings import Settings

ONLINE, JOB = 0, 1


@dataclass
class ItemVectors:
    """One item's vectors (layer -> (dim,) float32) and token facts."""

    vectors: dict[int, np.ndarray]
    n_tokens: int
    truncated: bool


@dataclass
class _Work:
    key: str
    prompt: str
    response: str
    future: Future = field(default_factory=Future)
    enc: Any = None  # the Encoded item, once a job window was tokenised to cut it into batches


Computed = Callable[[list[str], list[str], list[str], list[ItemVectors], bool], None]


class ModelWorker:
    """Owns the Embedder in one thread; see the module docstring."""

    def __init__(self, embedder: Embedder, metrics: Metrics, settings: Settings, on_computed: Computed | None = None):
        self.embedder, self.metrics = embedder, metrics
        self.max_wait = settings.max_wait_ms / 1000
        self.max_items = settings.max_batch_items
        self.on_computed = on_computed  # (keys, prompts, responses, results, online), before futures resolve
        self._cv = threading.Condition()
        self._online: deque[_Work] = deque()
        self._job_windows: deque[list[_Work]] = deque()
        self._job_batches: deque[list[_Work]] = deque()
        self._inflight: dict[str, Future] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="embrm-model", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in hand, fail what is still queued, end the thread."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout)
        with self._cv:
            queued = list(self._online) + [w for b in (*self._job_windows, *self._job_batches) for w in b]
            self._online.clear()
            self._job_windows.clear()
            self._job_batches.clear()
        for w in queued:
            if not w.future.done():
                w.future.set_exception(RuntimeError("the service is shutting down"))

    @property
    def queued(self) -> int:
        with self._cv:
            return len(self._online) + sum(len(b) for b in (*self._job_windows, *self._job_batches))

    def submit(self, items: list[tuple[str, str, str]], priority: int = ONLINE,
               known: Callable[[str], ItemVectors | None] | None = None) -> list[Future]:
        """Futures of (key, prompt, response) items, one per item (shared for repeats).

        ``known`` is asked under the lock for each key not in flight, so an item that
        another caller's batch finished a moment ago is found instead of computed again.
        """
        futures: list[Future] = []
        new: list[_Work] = []
        with self._cv:
            if self._stop:
                raise RuntimeError("the service is shutting down")
            for key, prompt, response in items:
                f = self._inflight.get(key)
                if f is None:
                    hit = known(key) if known is not None else None
                    f = Future()
                    if hit is not None:
                        f.set_result(hit)
                    else:
                        self._inflight[key] = f
                        new.append(_Work(key, prompt, response, f))
                futures.append(f)
            if priority == ONLINE:
                self._online.extend(new)
            elif new:
                self._job_windows.append(new)
            self._publish_depth()
            self._cv.notify_all()
        return futures

    def _publish_depth(self) -> None:
        self.metrics.queue.labels("online").set(len(self._online))
        self.metrics.queue.labels("job").set(sum(len(b) for b in (*self._job_windows, *self._job_batches)))

    def _take(self) -> tuple[list[_Work], bool] | None:
        """The next forward call's items: online first (after a short wait for company),
        else the next token-budget batch of a job window."""
        with self._cv:
            while not (self._stop or self._online or self._job_batches or self._job_windows):
                self._cv.wait()
            if self._stop:
                return None
            if self._online:
                deadline = time.monotonic() + self.max_wait
                while len(self._online) < self.max_items and not self._stop:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cv.wait(left)
                n = min(len(self._online), self.max_items)
                batch = [self._online.popleft() for _ in range(n)]
                self._publish_depth()
                return batch, True
            if not self._job_batches:
                window = self._job_windows.popleft()
            else:
                batch = self._job_batches.popleft()
                self._publish_depth()
                return batch, False
        return self._split(window), False

    def _split(self, window: list[_Work]) -> list[_Work]:
        """Cut a job window into the Embedder's forward batches (outside the lock);
        return the first and queue the rest."""
        encs = self.embedder.encode([w.prompt for w in window], [w.response for w in window])
        for w, e in zip(window, encs):
            w.enc = e
        groups = [[window[i] for i in b] for b in self.embedder.batches(encs)]
        with self._cv:
            self._job_batches.extendleft(reversed(groups[1:]))
            self._publish_depth()
        return groups[0]

    def _run(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            batch, online = taken
            try:
                t = time.perf_counter()
                if all(w.enc is not None for w in batch):  # one of a job window's batches, planned already
                    out = self.embedder.embed_encoded([w.enc for w in batch], [list(range(len(batch)))])
                else:
                    out = self.embedder.embed([w.prompt for w in batch], [w.response for w in batch])
                self.metrics.forward_seconds.inc(time.perf_counter() - t)
                self.metrics.tokens.inc(out.tokens)
                self.metrics.batch_items.observe(len(batch))
                results = [ItemVectors({layer: v[i] for layer, v in out.vectors.items()}, int(out.n_tokens[i]),
                                       bool(out.truncated[i])) for i in range(len(batch))]
                if self.on_computed is not None:
                    self.on_computed([w.key for w in batch], [w.prompt for w in batch], [w.response for w in batch],
                                     results, online)
            except BaseException as e:  # a failed batch fails its callers, not the thread
                with self._cv:
                    for w in batch:
                        self._inflight.pop(w.key, None)
                for w in batch:
                    w.future.set_exception(e)
                continue
            with self._cv:
                for w in batch:
                    self._inflight.pop(w.key, None)
            for w, r in zip(batch, results):
                w.future.set_result(r)
