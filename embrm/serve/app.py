"""The ASGI app of ``embrm serve``: FastAPI with one router per concern
(:mod:`embrm.serve.routes`), errors in OpenAI's JSON shape, and the outer guard.

Errors are OpenAI's JSON shape with a 4xx status (:mod:`embrm.serve.errors`); bad input
never reaches the model or the store. The guard (:mod:`embrm.serve.guard`) wraps the
whole app: default-deny auth, body limits and request metrics before any route runs.
"""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from embrm import __version__
from embrm.errors import EmbrmError
from embrm.serve.errors import ApiError, error_body
from embrm.serve.guard import Guard
from embrm.serve.routes import copies, embeddings, entries, health, page, rewards, rms
from embrm.serve.service import Service

ROUTERS = (health.router, embeddings.router, entries.router, copies.router, rewards.router, rms.router,
           page.router)


def create_app(svc: Service) -> FastAPI:
    """The FastAPI app over ``svc`` (routes find it in ``app.state.service``)."""
    app = FastAPI(title="embrm", version=__version__, summary="A shared, content-addressed embedding cache")
    app.state.service = svc
    for r in ROUTERS:
        app.include_router(r)
    app.openapi = _openapi_of(app)  # type: ignore[method-assign]

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(EmbrmError)
    async def _embrm_error(_: Request, e: EmbrmError) -> JSONResponse:
        return JSONResponse(error_body(str(e), "invalid_request_error"), status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        errs = e.errors()
        first = errs[0] if errs else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        param = ".".join(loc) or None
        msg = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            msg, param = "the body is not valid JSON", None
        elif param is None and first.get("type") in ("model_attributes_type", "dict_type", "missing"):
            msg = "the body must be a JSON object; send it with Content-Type: application/json"
        return JSONResponse(error_body(f"{param + ': ' if param else ''}{msg}", "invalid_request_error", param,
                                       first.get("type")), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(e.detail), ApiError(e.status_code, "").type), status_code=e.status_code)

    return app


def _openapi_of(app: FastAPI) -> Any:
    """The spec as FastAPI writes it, less its 422 answers: a request that fails
    validation is answered 400 in the error shape every route declares."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        spec = build()
        if fresh:
            for path in spec.get("paths", {}).values():
                for op in path.values():
                    op.get("responses", {}).pop("422", None)
            for unused in ("HTTPValidationError", "ValidationError"):
                spec.get("components", {}).get("schemas", {}).pop(unused, None)
        return spec

    return openapi


def wrap(app: FastAPI, svc: Service) -> Any:
    """The ASGI app with the outer layer: body limits, default-deny auth, request metrics."""
    return Guard(app, svc.tokens, svc.settings, svc.metrics)


__all__ = ["create_app", "wrap"]
