"""Putting a service together: model, store, threads, app, lifespan.

``embrm serve`` and the tests build the service the same way (:func:`build`): the model
loads first, so a bad model fails before any port opens; the model thread and the
committer start with the app and stop with it, jobs first (they finish their window),
then the model thread, then a last flush of computed vectors (SIGTERM lands here).
"""
from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from embrm.extractor.embedder import Embedder, EmbeddingSpec
from embrm.extractor.provenance import extraction_facts
from embrm.serve.app import create_app, wrap
from embrm.serve.cache import ServiceCache
from embrm.serve.jobs import Jobs
from embrm.serve.leases import JobLeases
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
                         settings, embedder.clip, extraction_facts(embedder, "service"))
    worker = ModelWorker(embedder, metrics, settings, on_computed=cache.computed)
    jobs = Jobs(store, embedder, worker, cache, metrics, settings)
    rewards = RewardModels(store, embedder.model_hash, embedder.spec.layers, embedder.dim, rms,
                           poll_seconds=settings.refresh_seconds)
    leases = JobLeases(store, jobs, embedder.model_hash, settings)
    svc = Service(embedder, store, worker, cache, jobs, metrics, dict(tokens or {}), settings, rewards, leases)
    app = create_app(svc)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        worker.start()
        cache.start()
        leases.begin()
        svc.ready = True  # /health says so from now on
        try:
            yield
        finally:
            svc.ready = False
            shutdown(svc)

    app.router.lifespan_context = lifespan
    return wrap(app, svc), svc


def shutdown(svc: Service) -> None:
    """Jobs stop after their window and are released to other replicas, the model thread
    stops after its batch; the buffer flushes."""
    svc.leases.stop()
    svc.worker.stop()
    n = svc.cache.stop()
    svc.rms.close()
    log.info("flushed %d computed vectors to the store", n)


def run_server(app: Any, settings: Settings, sock: Any) -> None:
    """Serve ``app`` on the listening socket ``sock`` until SIGTERM or SIGINT (see
    :class:`DrainingServer` for what a SIGTERM does)."""
    import uvicorn

    from embrm.serve.guard import protocol

    config = uvicorn.Config(app, log_level=settings.log_level, lifespan="on", access_log=False,
                            http=protocol(settings.header_timeout))
    _draining_server()(config).run(sockets=[sock])


def _draining_server() -> Any:
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn's server, but a SIGTERM drain ends with exit code 0. uvicorn stops
        accepting, finishes in-flight requests and runs the lifespan's shutdown (jobs
        finish their window and are released, computed vectors flush), then re-raises
        the signal, which would make the exit code -15: a supervisor reads that as a crash."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            if sig == signal.SIGTERM and sig in self._captured_signals:
                self._captured_signals.remove(sig)

    return DrainingServer
