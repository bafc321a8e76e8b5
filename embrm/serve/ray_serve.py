"""``embrm serve --ray``: the same service as a Ray Serve deployment.

Each Ray Serve replica builds the service exactly as ``embrm serve`` does
(:func:`embrm.serve.runtime.build`: model, store, threads, the FastAPI app and its
lifespan) and Ray Serve's HTTP proxy routes requests to the replicas. It is one code
path: the replicas are stateless service replicas on one store, as behind any load
balancer (docs/replicas.md), so vectors, reward models and dataset jobs are shared
through the store, and a replica Ray restarts finds its jobs there.

Ray Serve's health check asks each replica whether its service is ready (the same
answer as ``GET /health``); a replica that is not is restarted by Ray.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embrm.errors import EmbrmError

if TYPE_CHECKING:
    from embrm.extractor.embedder import EmbeddingSpec
    from embrm.serve.settings import Settings

APP_NAME = "embrm"
log = logging.getLogger("embrm.serve")


class ServiceReplica:
    """One Ray Serve replica: the service of :func:`embrm.serve.runtime.build`."""

    def __init__(self, spec: EmbeddingSpec, store_uri: str | None, device: str, batch_tokens: int | None,
                 tokens: dict[str, str], settings: Settings, rms: dict[str, Path]):
        self.args = (spec, store_uri, device, batch_tokens, tokens, settings, rms)
        self.svc: Any = None

    def __serve_build_asgi_app__(self) -> Any:
        from ray import serve

        from embrm.serve.runtime import build

        spec, store_uri, device, batch_tokens, tokens, settings, rms = self.args
        replica = serve.get_replica_context().replica_id.unique_id
        settings = settings.with_(replica_id=settings.replica_id or f"ray-{replica}")
        app, self.svc = build(spec, store_uri, device, batch_tokens, tokens, settings, rms)
        return app

    def check_health(self) -> None:
        if self.svc is not None and not self.svc.ready:
            raise RuntimeError("the embrm service is not ready")


def deploy(spec: EmbeddingSpec, store_uri: str | None, device: str, batch_tokens: int | None,
           tokens: dict[str, str], settings: Settings, rms: dict[str, Path], replicas: int,
           gpus_per_replica: float, cpus_per_replica: float = 1.0, address: str | None = None) -> str:
    """Start (or join) Ray, deploy the service with ``replicas`` replicas and return its URL."""
    try:
        import ray
        from ray import serve
    except ImportError:
        raise EmbrmError("embrm serve --ray needs Ray Serve: `pip install 'embrm[ray,serve]'`") from None
    if store_uri and "://" not in store_uri:  # replicas may start in another directory
        store_uri = str(Path(store_uri).resolve())
    local = {} if address else {"include_dashboard": False}  # a cluster's dashboard is the cluster's
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, logging_level="ERROR", **local)
    serve.start(http_options={"host": settings.host, "port": settings.port}, detached=False)
    ingress = serve.ingress()(ServiceReplica)
    dep = serve.deployment(ingress, name="embrm", num_replicas=replicas, health_check_period_s=2,
                           graceful_shutdown_wait_loop_s=0.5, graceful_shutdown_timeout_s=60,
                           ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica})
    serve.run(dep.bind(spec, store_uri, device, batch_tokens, tokens, settings, rms), name=APP_NAME,
              route_prefix="/", blocking=False)
    return f"http://{settings.host}:{settings.port}"


def wait_and_shutdown() -> None:
    """Block until SIGTERM or SIGINT, then shut the deployment down (each replica's
    service drains as ``embrm serve`` does: jobs released, computed vectors flushed)."""
    import ray
    from ray import serve

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(1.0):
        pass
    t = time.monotonic()
    serve.shutdown()  # each replica drains: its lifespan's shutdown runs
    log.warning("ray serve shut down in %.1f s", time.monotonic() - t)
    ray.shutdown()


__all__ = ["ServiceReplica", "deploy", "wait_and_shutdown"]
