"""Published reward models: ``embrm rm push/pull --store http://...`` reach these (and
``embrm rm ls`` reaches ``GET /v1/rms``, in :mod:`.rewards`, which lists what is served).

* ``PUT /v1/rms/{name}``: a run's files as Arrow (:func:`embrm.store.wire.run_files_ipc`),
  checked by the store's own write path before anything is written;
* ``GET /v1/rms/{name}/files``: the files back, as pushed.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from embrm.serve.deps import Svc
from embrm.serve.errors import ApiError
from embrm.serve.protocol.errors import COMMON, errors
from embrm.store.wire import ARROW, run_files_ipc, run_files_of

router = APIRouter(responses=COMMON)


@router.put("/v1/rms/{name}", status_code=201, responses=errors(409, 413))
async def push_rm(svc: Svc, name: str, request: Request, force: bool = False
                  ) -> dict[str, Any]:
    try:
        files = run_files_of(await request.body())
    except ValueError as e:
        raise ApiError(400, f"the body is not a reward-model run as Arrow (name, data) rows: {e}", None,
                       "invalid_run") from None
    if not force and await run_in_threadpool(svc.store.has_run, name):
        raise ApiError(409, f"a reward model named {name!r} is already published here; pick another name, or push "
                            "with force=true to replace it", None, "name_taken")
    return await run_in_threadpool(svc.store.push_run_files, name, files, force)


@router.get("/v1/rms/{name}/files", responses={200: {"content": {ARROW: {}}, "description": "the run's files as Arrow"},
                                                 **errors(404)})
async def pull_rm(svc: Svc, name: str) -> Response:
    if not await run_in_threadpool(svc.store.has_run, name):
        raise ApiError(404, f"no reward model named {name!r} is published here; GET /v1/rms lists them", None,
                       "rm_not_found")
    return Response(run_files_ipc(await run_in_threadpool(svc.store.run_files, name)), media_type=ARROW)
