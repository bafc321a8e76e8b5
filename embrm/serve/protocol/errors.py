"""Error responses as the OpenAPI spec declares them.

Every refusal is OpenAI's JSON error shape (:func:`embrm.serve.errors.error_body`) with a
4xx status; request validation errors are answered as 400 in that shape too (see
:mod:`embrm.serve.app`), so the spec lists 400 where FastAPI would list 422.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

WHY = {400: "Bad request: a parameter or the body is invalid (the message names it)",
       401: "No token or an unknown one, where the service has tokens",
       404: "Not found: an unknown entry, dataset, model or reward model",
       408: "The body took too long to arrive",
       409: "Conflict: a name taken, a job running, an entry partial",
       413: "Too large: more items or bytes than the service's limits",
       429: "The model's queue is full: try again (Retry-After)"}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorDetail


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error responses a route (or router) declares, for ``responses=``."""
    return {s: {"model": ErrorResponse, "description": WHY[s]} for s in statuses}


def ok(model: type[BaseModel], description: str = "Successful Response") -> dict[int | str, dict[str, Any]]:
    """The 200 answer's model, declared without validating each answer against it."""
    return {200: {"model": model, "description": description}}


#: What every route may answer: bad input, a missing token.
COMMON = errors(400, 401)
