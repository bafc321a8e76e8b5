"""``/health``, ``/metrics``, ``/v1/models`` and ``/v1/info``."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from embrm.serve.deps import Svc

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/metrics")
async def metrics(svc: Svc) -> Response:
    return Response(svc.metrics.render(), media_type="text/plain; version=0.0.4")


@router.get("/v1/models")
async def models(svc: Svc) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": svc.model_name, "object": "model", "created": 0, "owned_by": "embrm",
                                        **svc.info()}]}


@router.get("/v1/info")
async def info(svc: Svc) -> dict[str, Any]:
    return svc.info()
