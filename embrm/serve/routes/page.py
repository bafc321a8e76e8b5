"""The team's page: ``GET /`` and its static files (``/page/{name}``), shipped in the package.

The page is a static shell: HTML, CSS and ES modules that hold no data, so they are public
(:data:`embrm.serve.guard.PUBLIC`). Everything it shows comes from the API with the
bearer token the user enters once (kept in the tab's ``sessionStorage``). The one fact
the shell carries is whether the service wants a token at all, so a service without
tokens shows its data at once and one with tokens asks before it sends any request.

Every response here carries a strict Content-Security-Policy: scripts and styles only
from these files (no inline script or style, no ``eval``), requests only to this
origin, images only from here or ``data:``, no framing, no forms posted anywhere. Texts
from the store or a user reach the DOM as text nodes and attributes, never as HTML
(see ``static/dom.js``), so a dataset named ``<script>`` shows as those characters.
"""
from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from embrm.serve.deps import Svc
from embrm.serve.errors import ApiError

router = APIRouter(include_in_schema=False)
STATIC = Path(__file__).resolve().parents[1] / "static"
#: What may be served from ``static/``: plain file names, nothing else (no paths).
FILE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,40}\.(js|css)")
TYPES = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}


@cache
def _file(name: str) -> bytes:
    return (STATIC / name).read_bytes()


@router.get("/")
async def index(svc: Svc) -> Response:
    html = _file("index.html").replace(b'data-auth="off"', b'data-auth="on"') if svc.tokens else _file("index.html")
    return Response(html, media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/page/{name}")
async def asset(name: str) -> Response:
    if not FILE_NAME.fullmatch(name) or not (STATIC / name).is_file():
        raise ApiError(404, f"the page has no file {name[:60]!r}", None, "not_found")
    return Response(_file(name), media_type=TYPES[name.rsplit(".", 1)[1]], headers=HEADERS)
