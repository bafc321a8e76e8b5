"""What one ``embrm serve`` process is: an Embedder behind its model thread, a store, the
service cache, the dataset jobs, metrics, tokens and settings.

Routes (:mod:`embrm.serve.routes`) are a few lines each over :class:`Service`. Its one
piece of logic is :meth:`Service.embed`: memory and the store first, the model thread
for the rest, with single flight.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from embrm import __version__
from embrm.serve.errors import ApiError
from embrm.serve.worker import ONLINE, ItemVectors
from embrm.store import item_key

if TYPE_CHECKING:
    from embrm.extractor.embedder import Embedder
    from embrm.serve.cache import ServiceCache
    from embrm.serve.jobs import Jobs
    from embrm.serve.leases import JobLeases
    from embrm.serve.metrics import Metrics
    from embrm.serve.rewards import RewardModels
    from embrm.serve.settings import Settings
    from embrm.serve.worker import ModelWorker
    from embrm.store.base import Store


@dataclass
class Service:
    """Everything a route needs; built by :func:`embrm.serve.runtime.build`."""

    embedder: Embedder
    store: Store
    worker: ModelWorker
    cache: ServiceCache
    jobs: Jobs
    metrics: Metrics
    tokens: dict[str, str]
    settings: Settings
    rms: RewardModels
    leases: JobLeases
    ready: bool = False  # the model is loaded and the threads run: /health answers 200

    @property
    def model_name(self) -> str:
        return self.embedder.model_name

    @property
    def model_hash(self) -> str:
        return self.embedder.model_hash

    def info(self) -> dict[str, Any]:
        s = self.embedder.spec
        return {"model": self.model_name, "model_hash": self.model_hash, "source": self.embedder.source.source,
                "dim": self.embedder.dim, "dtype": s.dtype, "pooling": s.pooling, "layers": list(s.layers),
                "max_length": s.max_length, "truncation_side": s.truncation_side, "input_format": s.input_format,
                "embrm_version": __version__}

    def check_model(self, name: str | None) -> None:
        if name is None:
            return
        ok = {self.model_name, self.model_hash, self.embedder.source.source, self.embedder.source.name}
        if name in ok or (len(name) >= 8 and self.model_hash.startswith(name.lower())):
            return
        raise ApiError(404, f"model {name!r} is not served here; this service serves {self.model_name} "
                            f"({self.model_hash[:12]}): see GET /v1/models", "model", "model_not_found")

    async def embed(self, prompts: list[str], responses: list[str]) -> tuple[list[ItemVectors], list[bool], list[str]]:
        """Vectors of the items, whether each was cached, and their keys: memory and the
        store first, the model thread for the rest (single flight)."""
        keys = [item_key(p, r) for p, r in zip(prompts, responses)]
        if len(keys) > self.settings.max_queue:  # would never fit: a 429 would be retried for ever
            raise ApiError(413, f"{len(keys)} items in one request, more than the {self.settings.max_queue} the "
                                "model's queue holds: split the request", None, "larger_than_queue")
        if self.worker.queued + len(keys) > self.settings.max_queue:
            raise ApiError(429, f"{self.worker.queued} items are queued (limit {self.settings.max_queue}); "
                                "try again shortly", None, "queue_full", {"Retry-After": "1"})
        found = await run_in_threadpool(self.cache.lookup, keys)
        todo = {k: (k, p, r) for k, p, r in zip(keys, prompts, responses) if k not in found}
        self.metrics.hits.inc(len(keys) - len(todo))
        if todo:
            self.metrics.misses.inc(len(todo))
            futures = self.worker.submit(list(todo.values()), ONLINE, known=self.cache.memory)
            done = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
            found.update(zip(todo, done))
        return [found[k] for k in keys], [k not in todo for k in keys], keys

    def gc(self) -> dict[str, int]:
        """``gc`` of the service's store, with its own writers held off: no dataset job may
        run (409), and the committer flushes, then waits until gc is done."""
        with self.jobs.held() as running:
            if running:
                raise ApiError(409, f"{len(running)} dataset job(s) are running; run gc after they end", None,
                               "job_running")
            with self.cache.paused():
                return self.store.gc()
