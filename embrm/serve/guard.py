"""The outer layer of every request: default-deny auth, body limits and timeouts, request
metrics, safe logs.

One plain ASGI middleware, so that nothing reaches a route unchecked:

* **auth**: when tokens are configured, every path except ``/health`` and the page's
  static shell (``/``, ``/page/*``: no data in them) needs ``Authorization: Bearer
  <token>`` (the OpenAPI document and every API route the page calls included), else
  401, logged with the route and the source address (never the token);
* **body limits**: a declared ``Content-Length`` far over the limit is answered 413 (and
  the connection closed) before a byte of the body is read; one a little over (at most
  ``DRAIN_BYTES``) is read and dropped first, so that a client that sends its whole body
  before reading sees the answer; a body sent without a length is read up to the limit
  and as much again at most. JSON bodies are
  read here, with an idle and a total timeout (408 for a client that stalls); upload
  routes stream their bodies themselves (:func:`embrm.serve.uploads.body_to_file`) under
  the same limits;
* **metrics**: every request is counted by route template and status.

Slow *headers* never reach this layer: :class:`HeaderTimeoutH11` closes a connection
whose request headers do not arrive within ``header_timeout``.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from embrm.printable import printable
from embrm.serve.auth import who
from embrm.serve.errors import error_body

if TYPE_CHECKING:
    from embrm.serve.metrics import Metrics
    from embrm.serve.settings import Settings

log = logging.getLogger("embrm.serve")
#: Paths anyone may GET: liveness, and the page's static shell (HTML, CSS, JS that hold no
#: data: every number on the page comes from the API, with the token the user enters).
PUBLIC = {"/health", "/"}
PUBLIC_PREFIX = "/page/"
#: Routes whose bodies may be as large as ``max_upload_bytes`` and are streamed by the route.
STREAMED = ("/v1/datasets", "/v1/rms/", "/v1/vectors/")
DRAIN_BYTES = 8 << 20  # a body this much over the limit is read (and dropped) so the client sees the 413
DRAIN_SECONDS = 5.0


def safe(text: str) -> str:
    """A user-controlled string fit for one log line (no forged lines, no NUL bytes)."""
    return printable(text, 200)


def public(path: str) -> bool:
    return path in PUBLIC or path.startswith(PUBLIC_PREFIX)


def streamed(path: str) -> bool:
    return path == STREAMED[0] or path.startswith(STREAMED[1:])


class Guard:
    """Wraps the app: nothing reaches a route unless auth and limits let it through."""

    def __init__(self, app: Any, tokens: dict[str, str], settings: Settings, metrics: Metrics):
        self.app, self.tokens, self.settings, self.metrics = app, tokens, settings, metrics

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
            self.metrics.requests.labels(getattr(route, "path", "unmatched"), str(status["code"])).inc()

    async def _guarded(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path, method = scope["path"], scope["method"]
        if self.tokens and not public(path):
            name = who(headers.get("authorization"), self.tokens)
            if name is None:
                client = scope.get("client") or ("?", 0)
                log.warning("401 %s %s from %s:%s", method, safe(path), safe(str(client[0])), client[1])
                await reply(send, 401, "a valid bearer token is required: send Authorization: Bearer <token>",
                            "authentication_error", "invalid_api_key", {"www-authenticate": "Bearer"})
                return
            scope.setdefault("state", {})["token_name"] = name
            log.info("%s %s by %s", method, safe(path), name)
        limit = self.settings.max_upload_bytes if streamed(path) else self.settings.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            if declared.isdigit() and int(declared) <= limit + DRAIN_BYTES:
                await drain(receive)  # a little over: read it, so a client that sends first sees the answer
            await reply(send, 413, f"the body is over {limit} bytes; send less per request", "request_too_large",
                        "body_too_large", {"connection": "close"})
            return
        if method not in ("POST", "PUT", "PATCH") or streamed(path):
            await self.app(scope, receive, send)
            return
        body = await self._read(receive, send, limit)
        if body is None:
            return
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive: Any, send: Any, limit: int) -> bytes | None:
        """The whole body within the limit and the timeouts, or None once answered."""
        chunks, size = [], 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.body_timeout
        while True:
            wait = min(self.settings.body_idle_timeout, deadline - loop.time())
            try:
                if wait <= 0:
                    raise TimeoutError
                msg = await asyncio.wait_for(receive(), wait)
            except TimeoutError:
                await reply(send, 408, f"the body did not arrive in time (at most {self.settings.body_idle_timeout:g} "
                                       f"s between pieces, {self.settings.body_timeout:g} s in all)", "timeout",
                            "body_timeout", {"connection": "close"})
                return None
            if msg["type"] == "http.disconnect":
                return None
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                await drain(receive)
                await reply(send, 413, f"the body is over {limit} bytes; send less per request", "request_too_large",
                            "body_too_large", {"connection": "close"})
                return None
            if not msg.get("more_body", False):
                return b"".join(chunks)


async def drain(receive: Any, most: int = DRAIN_BYTES, seconds: float = DRAIN_SECONDS) -> None:
    """Read and drop some of a refused body (at most ``most`` bytes, ``seconds`` s), so a
    client that sends its whole body before reading still gets the answer."""
    seen = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while seen < most and loop.time() < end:
        try:
            msg = await asyncio.wait_for(receive(), max(0.01, end - loop.time()))
        except TimeoutError:
            return
        if msg["type"] != "http.request":
            return
        seen += len(msg.get("body", b""))
        if not msg.get("more_body", False):
            return


async def reply(send: Any, status: int, message: str, type_: str, code: str,
                extra: dict[str, str] | None = None) -> None:
    body = json.dumps(error_body(message, type_, None, code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class HeaderTimeoutH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, plus a deadline for request headers.

    uvicorn times out idle keep-alive connections, but a client that sends its headers
    a byte at a time (or connects and sends nothing) holds a connection for ever. Here
    the clock starts when a connection opens or a response completes, and a request
    whose headers are not complete ``header_timeout`` seconds later loses its connection.
    """

    header_timeout: float = 10.0

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def _header_timed_out(self) -> None:
        import h11

        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info("closed a connection whose request headers took over %g s", self.header_timeout)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        import h11

        super().data_received(data)
        if self.conn.their_state is not h11.IDLE and self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self._header_timer is None:
            self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)


def protocol(header_timeout: float) -> type[H11Protocol]:
    """The protocol class uvicorn runs, with the service's header timeout."""
    return type("EmbrmH11", (HeaderTimeoutH11,), {"header_timeout": header_timeout})
