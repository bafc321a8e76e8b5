"""What routes share: the service of the running app (checks of request values are
:mod:`embrm.serve.protocol.items`)."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from embrm.serve.service import Service


def service(request: Request) -> Service:
    """The :class:`Service` the app was built with (a FastAPI dependency)."""
    return request.app.state.service


#: A route parameter ``svc: Svc`` is the running service.
Svc = Annotated[Service, Depends(service)]

