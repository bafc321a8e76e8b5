"""What routes share: the service of the running app, and checks of request values."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from embrm.serve.errors import ApiError
from embrm.serve.service import Service


def service(request: Request) -> Service:
    """The :class:`Service` the app was built with (a FastAPI dependency)."""
    return request.app.state.service


#: A route parameter ``svc: Svc`` is the running service.
Svc = Annotated[Service, Depends(service)]


def check_text(v: str, param: str) -> str:
    """Text that can be encoded as UTF-8 (JSON may carry a lone surrogate that cannot)."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"{param} is not valid Unicode (a lone surrogate?); send UTF-8 text", param,
                       "invalid_text") from None
    return v


def check_count(n: int, max_items: int, param: str) -> None:
    if n == 0:
        raise ApiError(400, f"{param} is empty: send at least one item", param, "empty_input")
    if n > max_items:
        raise ApiError(413, f"{n} items in one request; the limit is {max_items}: split the request",
                       param, "too_many_items")
