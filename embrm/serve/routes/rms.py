"""Published reward models: ``embrm rm push/pull --store http://...`` reach these (and
``embrm rm ls`` reaches ``GET /v1/rms``, in :mod:`.rewards`, which lists what is served).

* ``PUT /v1/rms/{name}``: a run's files as Arrow (:func:`embrm.store.wire.run_files_ipc`), streamed
  under ``--max-upload-bytes`` and the body timeouts,
  checked by the store's own write path before anything is written;
* ``GET /v1/rms/{name}/files``: the files back, as pushed.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from embrm.errors import EmbrmError
from embrm.serve.deps import Svc
from embrm.serve.errors import ApiError
from embrm.serve.memory import release_memory
from embrm.serve.protocol.errors import COMMON, errors
from embrm.serve.service import Service
from embrm.serve.uploads import body_to_file
from embrm.store.registry import check_name
from embrm.store.wire import ARROW, run_files_in, run_files_ipc

router = APIRouter(responses=COMMON)
#: One push is checked and written at a time: a run is at most ``--max-upload-bytes`` and
#: its row is one copy of it, so concurrent pushes queue here instead of adding up.
PUSHING = threading.Lock()


def _push(svc: Service, name: str, path: Path, force: bool) -> dict[str, Any]:
    with PUSHING:
        try:
            try:
                files = run_files_in(str(path))
            except ValueError as e:
                raise ApiError(400, f"the body is not a reward-model run as Arrow (name, data) rows: {e}", None,
                               "invalid_run") from None
            if not force and svc.store.has_run(name):
                raise ApiError(409, f"a reward model named {name!r} is already published here; pick another name, "
                                    "or push with force=true to replace it", None, "name_taken")
            try:
                return svc.store.push_run_files(name, files, force, consume=True)
            except EmbrmError as e:
                raise ApiError(400, str(e), None, "invalid_run") from None
        finally:
            files = None  # the views of the memory map go before the memory is handed back
            release_memory()


@router.put("/v1/rms/{name}", status_code=201, responses=errors(408, 409, 413))
async def push_rm(svc: Svc, name: str, request: Request, force: bool = False) -> dict[str, Any]:
    """A run's files as Arrow, streamed to a temporary file under the service's upload
    limit and body timeouts (as ``PUT /v1/datasets``), then checked whole
    (:func:`embrm.runformat.check_files`) before one commit."""
    try:
        check_name(name)
    except EmbrmError as e:
        raise ApiError(400, str(e), "name", "invalid_name") from None
    path = await body_to_file(request, svc.settings)
    try:
        return await run_in_threadpool(_push, svc, name, path, force)
    finally:
        path.unlink(missing_ok=True)


@router.get("/v1/rms/{name}/files", responses={200: {"content": {ARROW: {}}, "description": "the run's files as Arrow"},
                                                 **errors(404)})
async def pull_rm(svc: Svc, name: str) -> Response:
    if not await run_in_threadpool(svc.store.has_run, name):
        raise ApiError(404, f"no reward model named {name!r} is published here; GET /v1/rms lists them", None,
                       "rm_not_found")
    return Response(run_files_ipc(await run_in_threadpool(svc.store.run_files, name)), media_type=ARROW)
