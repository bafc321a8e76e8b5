"""Putting a service together: model, store, threads, app, lifespan.

``embrm serve`` and the tests build the service the same way (:func:`build`): the model
loads first, so a bad model fails before any port opens; the model thread and the
committer start with the app and stop with it, jobs first (they finish their window),
then the model thread, then a last flush of computed vectors (SIGTERM lands here).
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from embrm.extractor.embedder import Embedder, EmbeddingSpec
from embrm.serve.app import Limits, Service, create_app, wrap
from embrm.serve.cache import ServiceCache
from embrm.serve.jobs import Jobs
from embrm.serve.metrics import Metrics
from embrm.serve.worker import ModelWorker

log = logging.getLogger("embrm.serve")


@dataclass(frozen=True)
class Tuning:
    """How the service batches and commits; none of it changes a vector."""

    max_wait_ms: float = 5.0
    commit_items: int = 1024
    commit_seconds: float = 2.0
    window: int = 1024
    hot_bytes: int = 256 << 20


def build(spec: EmbeddingSpec, store_uri: str | None, device: str = "auto", batch_tokens: int | None = None,
          tokens: dict[str, str] | None = None, limits: Limits | None = None, tuning: Tuning | None = None
          ) -> tuple[Any, Service]:
    """The ASGI app and its service, model loaded, threads not started (the app's lifespan does)."""
    from embrm.store.store import open_store

    tuning = tuning or Tuning()
    store = open_store(store_uri, create=True)
    embedder = Embedder(spec, device, batch_tokens).load()
    metrics = Metrics()
    cache = ServiceCache(store, embedder.model_hash, embedder.model_name, embedder.catalog_config(), metrics,
                         tuning.commit_items, tuning.commit_seconds, tuning.hot_bytes)
    worker = ModelWorker(embedder, metrics, tuning.max_wait_ms, on_computed=cache.computed)
    jobs = Jobs(store, embedder, worker, cache, metrics, tuning.window)
    svc = Service(embedder, store, worker, cache, jobs, metrics, dict(tokens or {}), limits or Limits())
    app = create_app(svc)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        worker.start()
        cache.start()
        try:
            yield
        finally:
            shutdown(svc)

    app.router.lifespan_context = lifespan
    return wrap(app, svc), svc


def shutdown(svc: Service) -> None:
    """Jobs stop after their window, the model thread after its batch; the buffer flushes."""
    svc.jobs.stop()
    svc.worker.stop()
    n = svc.cache.stop()
    log.info("flushed %d computed vectors to the store", n)
