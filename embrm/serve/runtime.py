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
from pathlib import Path
from typing import Any

from embrm.extractor.embedder import Embedder, EmbeddingSpec
from embrm.serve.app import create_app, wrap
from embrm.serve.cache import ServiceCache
from embrm.serve.jobs import Jobs
from embrm.serve.metrics import Metrics
from embrm.serve.rewards import RewardModels
from embrm.serve.service import Service
from embrm.serve.settings import DEFAULTS, Settings
from embrm.serve.worker import ModelWorker

log = logging.getLogger("embrm.serve")


def build(spec: EmbeddingSpec, store_uri: str | None, device: str = "auto", batch_tokens: int | None = None,
          tokens: dict[str, str] | None = None, settings: Settings = DEFAULTS,
          rms: dict[str, Path] | None = None) -> tuple[Any, Service]:
    """The ASGI app and its service, model loaded, threads not started (the app's lifespan
    does). ``rms`` names run directories to serve as reward models; one trained on other
    embeddings is refused here, before any port opens."""
    from embrm.store.backends import open_store

    store = open_store(store_uri, create=True)
    store.check_engine("local", "embrm serve")
    embedder = Embedder(spec, device, batch_tokens).load()
    metrics = Metrics()
    cache = ServiceCache(store, embedder.model_hash, embedder.model_name, embedder.catalog_config(), metrics,
                         settings, embedder.clip)
    worker = ModelWorker(embedder, metrics, settings, on_computed=cache.computed)
    jobs = Jobs(store, embedder, worker, cache, metrics, settings)
    rewards = RewardModels(store, embedder.model_hash, embedder.spec.layers, embedder.dim, rms)
    svc = Service(embedder, store, worker, cache, jobs, metrics, dict(tokens or {}), settings, rewards)
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
    svc.rms.close()
    log.info("flushed %d computed vectors to the store", n)
