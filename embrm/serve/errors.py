"""Errors in OpenAI's JSON shape: ``{"error": {"message", "type", "param", "code"}}``.

Every route answers a user's mistake with a 4xx in this shape, so the official
``openai`` client and plain ``curl`` users read the same message.
"""
from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request the service refuses: status, a one-line message, and the bad parameter."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    @property
    def type(self) -> str:
        return {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                409: "conflict_error", 413: "request_too_large", 429: "rate_limit_error"}.get(
            self.status, "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
