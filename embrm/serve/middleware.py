"""The outer layer of every request: default-deny auth, body limits, request metrics.

One plain ASGI middleware, so that nothing reaches a route unchecked:

* **auth**: when tokens are configured, every path except ``/health`` needs
  ``Authorization: Bearer <token>`` (the OpenAPI document and docs included), else 401;
* **body limits**: a body over the limit is refused with 413 before any route reads it
  (``Content-Length`` is checked first; a chunked body is read up to the limit);
* **metrics**: every request is counted by route template and status.
"""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from embrm.serve.auth import who
from embrm.serve.errors import error_body

if TYPE_CHECKING:
    from embrm.serve.app import Service

log = logging.getLogger("embrm.serve")
PUBLIC = {"/health"}
DRAIN_BYTES = 256 << 20  # an oversized body is read (and dropped) up to this much before the 413


class Guard:
    def __init__(self, app: Any, svc: Service):
        self.app, self.svc = app, svc

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_counted(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                status["code"] = msg["status"]
            await send(msg)

        try:
            await self._guarded(scope, receive, send_counted)
        finally:
            route = scope.get("route")
            self.svc.metrics.requests.labels(getattr(route, "path", "unmatched"), str(status["code"])).inc()

    async def _guarded(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.svc.tokens and scope["path"] not in PUBLIC:
            name = who(headers.get("authorization"), self.svc.tokens)
            if name is None:
                await _reply(send, 401, "a valid bearer token is required: send Authorization: Bearer <token>",
                             "authentication_error", "invalid_api_key", {"www-authenticate": "Bearer"})
                return
            scope.setdefault("state", {})["token_name"] = name
            log.info("%s %s by %s", scope["method"], scope["path"], name)
        limits = self.svc.limits
        limit = limits.max_upload_bytes if scope["path"] == "/v1/datasets" else limits.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _drain(receive, DRAIN_BYTES)  # a client that sends before it reads then sees the answer
            await _reply(send, 413, f"the body is over {limit} bytes; send less per request", "request_too_large",
                         "body_too_large")
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            chunks, size = [], 0
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                chunks.append(msg.get("body", b""))
                size += len(chunks[-1])
                if size > limit:
                    await _drain(receive, DRAIN_BYTES - size)
                    await _reply(send, 413, f"the body is over {limit} bytes; send less per request",
                                 "request_too_large", "body_too_large")
                    return
                if not msg.get("more_body", False):
                    break
            body = b"".join(chunks)
            sent = False

            async def replay() -> dict[str, Any]:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)


async def _drain(receive: Any, most: int) -> None:
    """Read and drop the rest of a refused body, up to ``most`` bytes."""
    seen = 0
    while seen < most:
        msg = await receive()
        if msg["type"] != "http.request":
            return
        seen += len(msg.get("body", b""))
        if not msg.get("more_body", False):
            return


async def _reply(send: Any, status: int, message: str, type_: str, code: str,
                 extra: dict[str, str] | None = None) -> None:
    body = json.dumps(error_body(message, type_, None, code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
