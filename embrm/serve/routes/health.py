"""``/health``, ``/metrics`` (and the same numbers as JSON, ``/v1/stats``), ``/v1/models`` and ``/v1/info``."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from embrm.serve.deps import Svc

router = APIRouter()


@router.get("/health", response_model=None)
async def health(svc: Svc) -> dict[str, str] | JSONResponse:
    """Readiness for a load balancer: 200 once the model is loaded and the service's
    threads run, 503 before that and while it shuts down (docs/replicas.md)."""
    if not svc.ready:
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return {"status": "ok"}


@router.get("/metrics")
async def metrics(svc: Svc) -> Response:
    return Response(svc.metrics.render(), media_type="text/plain; version=0.0.4")


@router.get("/v1/stats")
async def stats(svc: Svc) -> dict[str, Any]:
    """What ``/metrics`` counts, as JSON (the page's service panel), with the model and
    the number of running jobs."""
    return {"model": svc.model_name, "model_hash": svc.model_hash, "replica": svc.leases.owner,
            **svc.metrics.snapshot(),
            "jobs_running": sum(j.status == "running" for j in svc.jobs.list())}


@router.get("/v1/models")
async def models(svc: Svc) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": svc.model_name, "object": "model", "created": 0, "owned_by": "embrm",
                                        **svc.info()}]}


@router.get("/v1/info")
async def info(svc: Svc) -> dict[str, Any]:
    return svc.info()
