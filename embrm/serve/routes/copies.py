"""Copies into the service (``embrm store copy --to http://...``): the store's write
protocol over HTTP, every input checked before anything is written.

* ``GET /v1/datasets/{dataset_hash}``: whether the rows of a dataset are here (rows are
  sent with ``PUT /v1/datasets``, which recomputes their hash);
* ``POST /v1/entries/register``: open a catalog entry of an uploaded dataset under a
  model whose fingerprint parts hash to the model hash given;
* ``GET /v1/vectors/{model_hash}/info``: what the model's vector table holds;
* ``POST /v1/vectors/{model_hash}/missing``: which of the keys sent (Arrow) have no vector;
* ``PUT /v1/vectors/{model_hash}``: one window of vectors (Arrow; checked by
  :mod:`embrm.serve.vector_uploads`), committed like an extraction's window;
* ``POST /v1/entries/{model}/{dataset}/finish``: count, set the status, compact.

Bodies of the ``/v1/vectors/`` routes are streamed to a file under the upload byte limit
and the body timeouts of ``/v1/datasets`` (:func:`~embrm.serve.uploads.body_to_file`).
"""
from __future__ import annotations

from typing import Any

import pyarrow as pa
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from embrm.errors import EmbrmError
from embrm.serve.deps import Svc
from embrm.serve.errors import ApiError
from embrm.serve.protocol.copies import Committed, Register, RegisteredEntry, VectorTableInfo, checked_model_hash
from embrm.serve.protocol.entries import resolve
from embrm.serve.protocol.errors import COMMON, errors, ok
from embrm.serve.uploads import body_to_file
from embrm.serve.vector_uploads import checked_vectors, info_json, read_keys
from embrm.store.copy_in import dataset_info, register_entry
from embrm.store.wire import ARROW, entry_json, to_ipc

router = APIRouter(responses=COMMON)
UPLOAD = errors(408, 413)  # bodies streamed under the upload limit and the body timeouts


@router.get("/v1/datasets/{dataset_hash}", responses=errors(404))
async def get_dataset(svc: Svc, dataset_hash: str) -> dict[str, Any]:
    info = await run_in_threadpool(dataset_info, svc.store, dataset_hash.lower())
    if info is None:
        raise ApiError(404, f"dataset {dataset_hash[:12]!r} has no rows here", None, "dataset_not_found")
    return info


@router.post("/v1/entries/register", responses={**ok(RegisteredEntry), **errors(404)})
async def register(svc: Svc, req: Register) -> dict[str, Any]:
    """The entry of an uploaded dataset under a model checked against its fingerprint parts."""
    try:
        e = await run_in_threadpool(register_entry, svc.store, req.model_hash, req.model_name, req.model_config_,
                                    req.dataset_hash, req.dataset_name, dict(req.dataset_source), req.kind,
                                    req.n_rows)
    except LookupError as e:
        raise ApiError(404, str(e), "dataset_hash", "dataset_not_found") from None
    except EmbrmError as e:
        raise ApiError(400, str(e), None, "invalid_entry") from None
    return {"entry": entry_json(e)}


@router.get("/v1/vectors/{model_hash}/info", responses=ok(VectorTableInfo))
async def vector_info(svc: Svc, model_hash: str) -> dict[str, Any]:
    return {"info": info_json(await run_in_threadpool(svc.store.vector_info, checked_model_hash(model_hash)))}


@router.post("/v1/vectors/{model_hash}/missing", response_model=None,
             responses={200: {"content": {ARROW: {}}, "description": "the missing keys as an Arrow IPC stream"},
                        **UPLOAD})
async def missing(svc: Svc, request: Request, model_hash: str) -> Response:
    """The keys sent (an Arrow stream of one column, item_key) that have no vector here."""
    mh = checked_model_hash(model_hash)
    path = await body_to_file(request, svc.settings)
    try:
        keys = await run_in_threadpool(read_keys, path)
        out = await run_in_threadpool(svc.store.missing_keys, mh, keys)
    except EmbrmError as e:
        raise ApiError(400, str(e), None, "invalid_keys") from None
    finally:
        path.unlink(missing_ok=True)
    return Response(to_ipc(pa.table({"item_key": out})), media_type=ARROW)


@router.put("/v1/vectors/{model_hash}", responses={**ok(Committed), **UPLOAD})
async def put_vectors(svc: Svc, request: Request, model_hash: str) -> dict[str, Any]:
    """One window of vectors, checked, then one commit (keys stored already are skipped)."""
    mh = checked_model_hash(model_hash)
    path = await body_to_file(request, svc.settings)
    try:
        table = await run_in_threadpool(checked_vectors, svc.store, mh, path)
        added = await run_in_threadpool(svc.store.commit_vectors, mh, table)
    except EmbrmError as e:
        raise ApiError(400, str(e), None, "invalid_vectors") from None
    finally:
        path.unlink(missing_ok=True)
    return {"added": added, "rows": len(table)}


@router.post("/v1/entries/{model}/{dataset}/finish", responses={**ok(RegisteredEntry), **errors(404, 409)})
async def finish(svc: Svc, model: str, dataset: str) -> dict[str, Any]:
    e = await run_in_threadpool(resolve, svc, model, dataset)
    if svc.jobs.running(e.model_hash, e.dataset_hash):
        raise ApiError(409, f"a dataset job is extracting {e.dataset_name}; it finishes the entry itself", None,
                       "job_running")
    e = await run_in_threadpool(svc.store.finish_entry, e.model_hash, e.dataset_hash)
    return {"entry": entry_json(e)}
