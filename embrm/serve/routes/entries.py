"""Datasets and entries: uploads, dataset jobs, the catalog, entry pulls, removal and gc.

* ``PUT /v1/datasets``: normalised rows (Arrow), fingerprinted as a local extraction does;
* ``POST /v1/entries``: extract an uploaded dataset with the served model (a job);
* ``GET /v1/entries``, ``GET /v1/entries/{model}/{dataset}``: the catalog (paged) and a job's state;
* ``GET /v1/jobs``: the dataset jobs of this process and their progress;
* ``GET /v1/entries/{model}/{dataset}/vectors``: an entry as an Arrow stream (ETag'd);
* ``GET /v1/entries/{model}/{dataset}/provenance``: how its vectors were computed;
* ``DELETE /v1/entries/{model}/{dataset}`` and ``POST /v1/gc``: what ``embrm store rm``
  and ``embrm store gc --store http://...`` reach.

Requests and answers are :mod:`embrm.serve.protocol.entries`.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from embrm.errors import EmbrmError
from embrm.serve.deps import Svc
from embrm.serve.errors import ApiError
from embrm.serve.listing import Sort, select, vector_bytes
from embrm.serve.prefetch import prefetched
from embrm.serve.protocol.entries import (
    EntryList,
    EntryRequest,
    EntryState,
    JobList,
    Kind,
    Removed,
    Upload,
    listing,
    resolve,
)
from embrm.serve.protocol.errors import COMMON, errors, ok
from embrm.serve.pulls import entry_stream
from embrm.serve.uploads import body_to_file, store_upload
from embrm.store.catalog import NAME_MAX, check_dataset_name
from embrm.store.wire import ARROW, entry_json

router = APIRouter(responses=COMMON)


@router.put("/v1/datasets", responses={**ok(Upload), **errors(408, 413)})
async def put_dataset(svc: Svc, request: Request, kind: Kind,
                      name: str = "uploaded", dataset_hash: str | None = None) -> dict[str, Any]:
    """Normalised rows as an Arrow stream: streamed to a temporary file, checked,
    fingerprinted and compared with ``dataset_hash`` before anything is stored."""
    path = await body_to_file(request, svc.settings)
    try:
        return await run_in_threadpool(store_upload, svc.store, path, name, kind, dataset_hash)
    except EmbrmError as e:
        raise ApiError(400, str(e), None, "invalid_rows") from None
    finally:
        path.unlink(missing_ok=True)


@router.post("/v1/entries", status_code=202, responses={202: {"model": EntryState}, **errors(404)})
async def post_entry(svc: Svc, req: EntryRequest) -> dict[str, Any]:
    """Extract an uploaded dataset with the served model. The dataset is named by its hash
    (or a unique prefix of a stored one); a kind given must be the stored dataset's."""
    try:
        found = await run_in_threadpool(svc.store.find_dataset, req.dataset)
    except EmbrmError as e:
        raise ApiError(400, str(e), "dataset", "invalid_dataset") from None
    if found is None:
        raise ApiError(404, f"dataset {req.dataset!r} has no rows here; upload it with PUT /v1/datasets", "dataset",
                       "dataset_not_found")
    dh, stored_kind = found
    other = next((e for e in await run_in_threadpool(svc.store.entries) if e.dataset_hash == dh), None)
    stored_kind = stored_kind or (other.kind if other else None)
    if req.kind is not None and stored_kind is not None and req.kind != stored_kind:
        raise ApiError(400, f"kind {req.kind} disagrees with the stored dataset, which is {stored_kind}", "kind",
                       "kind_mismatch")
    kind = req.kind or stored_kind
    if kind is None:
        raise ApiError(400, "kind is needed for a dataset no entry knows yet: pairwise, multi or pointwise", "kind")
    name = req.name or (other.dataset_name if other else f"uploaded-{dh[:12]}")
    try:
        check_dataset_name(name)
    except EmbrmError as e:
        raise ApiError(400, str(e), "name", "invalid_name") from None
    source = req.source if req.source is not None else (other.dataset_source if other else {})
    e = svc.store.entry(svc.model_hash, dh)
    if e is not None and e.status == "complete":
        return {"entry": e.summary(), "job": None}
    job = await run_in_threadpool(svc.leases.start, dh, name, kind, source)
    return {"entry": None, "job": job}


@router.get("/v1/entries", responses=ok(EntryList))
async def list_entries(svc: Svc, offset: Annotated[int, Query(ge=0)] = 0,
                       limit: Annotated[int | None, Query(ge=1)] = None,
                       q: Annotated[str | None, Query(max_length=NAME_MAX)] = None,
                       sort: Sort | None = None, order: Literal["asc", "desc"] = "asc") -> dict[str, Any]:
    """The catalog; with ``offset``/``limit`` one page of it, filtered by ``q`` and sorted
    by ``sort`` (see :mod:`embrm.serve.listing`). Without them, every entry, as before."""
    if limit is not None and limit > svc.settings.max_page_entries:
        raise ApiError(400, f"limit={limit} is over {svc.settings.max_page_entries} entries a page; ask for less and "
                            "page with offset", "limit", "limit_too_large")
    entries = await run_in_threadpool(svc.store.entries)
    page, total = select(entries, q, sort, order == "desc", offset, limit)
    return listing([{**entry_json(e), "vector_bytes": vector_bytes(e)} for e in page], total, offset, limit)


@router.get("/v1/jobs", responses=ok(JobList))
async def list_jobs(svc: Svc) -> dict[str, Any]:
    """Every replica's dataset jobs (the store's records), running ones first: rows done
    of all; tokens/s for the ones running here."""
    return {"object": "list", "data": await run_in_threadpool(svc.leases.report)}


@router.get("/v1/entries/{model}/{dataset}", responses={**ok(EntryState), **errors(404)})
async def get_entry(svc: Svc, model: str, dataset: str) -> dict[str, Any]:
    e = await run_in_threadpool(resolve, svc, model, dataset)
    job = await run_in_threadpool(svc.leases.one, e.model_hash, e.dataset_hash)
    return {"entry": entry_json(e), "job": job}


@router.delete("/v1/entries/{model}/{dataset}", responses={**ok(Removed), **errors(404, 409)})
async def delete_entry(svc: Svc, model: str, dataset: str) -> dict[str, Any]:
    e = await run_in_threadpool(resolve, svc, model, dataset)
    if svc.jobs.running(e.model_hash, e.dataset_hash):
        raise ApiError(409, f"a dataset job is extracting {e.dataset_name}; remove the entry after it ends", None,
                       "job_running")
    await run_in_threadpool(svc.store.delete, e.model_hash, e.dataset_hash)
    return {"entry": entry_json(e)}


@router.post("/v1/gc", responses=errors(409))
async def gc(svc: Svc) -> dict[str, int]:
    return await run_in_threadpool(svc.gc)


@router.get("/v1/entries/{model}/{dataset}/provenance")
async def provenance(svc: Svc, model: str, dataset: str, ids: bool = False) -> dict[str, Any]:
    """How an entry's vectors were computed: provenance records and their counts; with
    ``ids``, the id of every stored key (what a copy from this service carries along)."""
    from embrm.store.provenance import entry_provenance

    e = await run_in_threadpool(resolve, svc, model, dataset)
    return await run_in_threadpool(entry_provenance, svc.store, e, ids)


@router.get("/v1/entries/{model}/{dataset}/vectors", response_model=None,
            responses={200: {"content": {ARROW: {}}, "description": "the entry as an Arrow IPC stream"},
                       **errors(404, 409)})
async def pull(svc: Svc, request: Request, model: str, dataset: str, layer: int | None = None, offset: int = 0,
               limit: int | None = None, partial: bool = False, texts: bool = False) -> Any:
    e = await run_in_threadpool(resolve, svc, model, dataset)
    if e.status != "complete" and not partial:
        raise ApiError(409, f"entry {e.model_name} x {e.dataset_name} is partial ({e.rows} of {e.n_rows} rows); "
                            "ask with partial=true for what is there", None, "entry_partial")
    if layer is not None and layer not in e.layers:
        raise ApiError(400, f"layer {layer} was not extracted; stored layers: {list(e.layers)}", "layer")
    if offset < 0 or (limit is not None and limit < 1):
        raise ApiError(400, "offset must be >= 0 and limit >= 1", "offset")
    versions = await run_in_threadpool(svc.store.table_versions, e)
    etag = f'"{e.model_hash[:16]}.{e.dataset_hash[:16]}.{versions[0]}.{versions[1]}.{layer}.{offset}.' \
           f'{limit}.{int(partial)}.{int(texts)}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    stream = prefetched(entry_stream(svc.store, e, layer, offset, limit, partial, texts))
    return StreamingResponse(stream, media_type=ARROW, headers={"ETag": etag})
