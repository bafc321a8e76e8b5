"""The HTTP routes of ``embrm serve`` (FastAPI).

Every route is a few lines over :class:`Service`, which holds the Embedder (through the
model thread), the store, the service cache and the dataset jobs. Errors are OpenAI's
JSON shape with a 4xx status (:mod:`embrm.serve.errors`); bad input never reaches the
model or the store.
"""
from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from embrm import __version__
from embrm.errors import EmbrmError
from embrm.serve import wire
from embrm.serve.errors import ApiError, error_body
from embrm.serve.prefetch import prefetched
from embrm.serve.worker import ONLINE, ItemVectors
from embrm.store import item_key

if TYPE_CHECKING:
    from embrm.extractor.embedder import Embedder
    from embrm.serve.cache import ServiceCache
    from embrm.serve.jobs import Jobs
    from embrm.serve.metrics import Metrics
    from embrm.serve.worker import ModelWorker
    from embrm.store.store import Store

log = logging.getLogger("embrm.serve")
ARROW = "application/vnd.apache.arrow.stream"


@dataclass
class Limits:
    max_body_bytes: int = 32 << 20
    max_upload_bytes: int = 1 << 30
    max_items: int = 2048
    max_queue: int = 65536


@dataclass
class Service:
    """Everything a route needs; built by ``embrm serve`` (or a test) before the app."""

    embedder: Embedder
    store: Store
    worker: ModelWorker
    cache: ServiceCache
    jobs: Jobs
    metrics: Metrics
    tokens: dict[str, str]
    limits: Limits

    @property
    def model_name(self) -> str:
        return self.embedder.model_name

    @property
    def model_hash(self) -> str:
        return self.embedder.model_hash

    def info(self) -> dict[str, Any]:
        s = self.embedder.spec
        return {"model": self.model_name, "model_hash": self.model_hash, "source": self.embedder.source.source,
                "dim": self.embedder.dim, "dtype": s.dtype, "pooling": s.pooling, "layers": list(s.layers),
                "max_length": s.max_length, "truncation_side": s.truncation_side, "input_format": s.input_format,
                "embrm_version": __version__}

    def check_model(self, name: str | None) -> None:
        if name is None:
            return
        ok = {self.model_name, self.model_hash, self.embedder.source.source, self.embedder.source.name}
        if name in ok or (len(name) >= 8 and self.model_hash.startswith(name.lower())):
            return
        raise ApiError(404, f"model {name!r} is not served here; this service serves {self.model_name} "
                            f"({self.model_hash[:12]}): see GET /v1/models", "model", "model_not_found")

    async def embed(self, prompts: list[str], responses: list[str]) -> tuple[list[ItemVectors], list[bool], list[str]]:
        """Vectors of the items, whether each was cached, and their keys: memory and the
        store first, the model thread for the rest (single flight)."""
        keys = [item_key(p, r) for p, r in zip(prompts, responses)]
        if self.worker.queued + len(keys) > self.limits.max_queue:
            raise ApiError(429, f"{self.worker.queued} items are queued (limit {self.limits.max_queue}); "
                                "try again shortly", None, "queue_full", {"Retry-After": "1"})
        found = await run_in_threadpool(self.cache.lookup, keys)
        todo = {k: (k, p, r) for k, p, r in zip(keys, prompts, responses) if k not in found}
        self.metrics.hits.inc(len(keys) - len(todo))
        if todo:
            self.metrics.misses.inc(len(todo))
            futures = self.worker.submit(list(todo.values()), ONLINE, known=self.cache.memory)
            done = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
            found.update(zip(todo, done))
        return [found[k] for k in keys], [k not in todo for k in keys], keys


# ------------------------------------------------------------------ requests
def _text(v: str, param: str) -> str:
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"{param} is not valid Unicode (a lone surrogate?); send UTF-8 text", param,
                       "invalid_text") from None
    return v


class EmbeddingsRequest(BaseModel):
    """OpenAI's ``POST /v1/embeddings`` body; ``prompt`` is embrm's extension."""

    model_config = ConfigDict(extra="ignore")
    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None
    prompt: str = Field("", description="embrm: a prompt the input texts answer (default: none)")


class EmbedItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str
    response: str


class EmbedRequest(BaseModel):
    """embrm's native ``POST /v1/embed`` body: items to embed, or item keys to look up."""

    model_config = ConfigDict(extra="forbid")
    items: list[EmbedItem] | None = None
    item_keys: list[str] | None = None
    layers: list[int] | None = None
    encoding_format: Literal["float", "base64"] = "float"
    model: str | None = None


class EntryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: str
    name: str | None = None
    kind: Literal["pairwise", "multi", "pointwise"] | None = None
    source: dict[str, Any] | None = None


def _encode(v: np.ndarray, fmt: str) -> Any:
    v = np.asarray(v, dtype="<f4")
    return base64.b64encode(v.tobytes()).decode() if fmt == "base64" else v.tolist()


def _check_count(n: int, limits: Limits, param: str) -> None:
    if n == 0:
        raise ApiError(400, f"{param} is empty: send at least one item", param, "empty_input")
    if n > limits.max_items:
        raise ApiError(413, f"{n} items in one request; the limit is {limits.max_items}: split the request",
                       param, "too_many_items")


# ---------------------------------------------------------------------- app
def create_app(svc: Service) -> FastAPI:
    app = FastAPI(title="embrm", version=__version__, summary="A shared, content-addressed embedding cache")

    # -------------------------------------------------------------- errors
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(EmbrmError)
    async def _embrm_error(_: Request, e: EmbrmError) -> JSONResponse:
        return JSONResponse(error_body(str(e), "invalid_request_error"), status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        errs = e.errors()
        first = errs[0] if errs else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        param = ".".join(loc) or None
        msg = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            msg, param = "the body is not valid JSON", None
        return JSONResponse(error_body(f"{param + ': ' if param else ''}{msg}", "invalid_request_error", param,
                                       first.get("type")), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(e.detail), ApiError(e.status_code, "").type), status_code=e.status_code)

    # -------------------------------------------------------------- public
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(svc.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": svc.model_name, "object": "model", "created": 0,
                                            "owned_by": "embrm", **svc.info()}]}

    @app.get("/v1/info")
    async def info() -> dict[str, Any]:
        return svc.info()

    # ------------------------------------------------------------ embedding
    @app.post("/v1/embeddings")
    async def embeddings(req: EmbeddingsRequest) -> dict[str, Any]:
        svc.check_model(req.model)
        if req.dimensions is not None and req.dimensions != svc.embedder.dim:
            raise ApiError(400, f"dimensions={req.dimensions} is not available: this model's vectors have "
                                f"{svc.embedder.dim}", "dimensions", "invalid_dimensions")
        texts = [req.input] if isinstance(req.input, str) else req.input
        if texts and not all(isinstance(t, str) for t in texts):
            raise ApiError(400, "input is token ids; send text: embrm tokenizes with the model's own tokenizer",
                           "input", "token_ids_not_supported")
        _check_count(len(texts), svc.limits, "input")
        prompt = _text(req.prompt, "prompt")
        for i, t in enumerate(texts):
            _text(t, f"input[{i}]")
            if not t and not prompt:
                raise ApiError(400, f"input[{i}] is empty and there is no prompt: nothing to embed", f"input[{i}]",
                               "empty_input")
        vecs, _, _ = await svc.embed([prompt] * len(texts), texts)
        layer = svc.embedder.spec.layers[0]
        n_tok = sum(min(v.n_tokens, svc.embedder.spec.max_length) for v in vecs)
        return {"object": "list", "model": svc.model_name,
                "data": [{"object": "embedding", "index": i, "embedding": _encode(v.vectors[layer],
                                                                                  req.encoding_format)}
                         for i, v in enumerate(vecs)],
                "usage": {"prompt_tokens": n_tok, "total_tokens": n_tok}}

    @app.post("/v1/embed", response_model=None)
    async def embed(req: EmbedRequest, request: Request) -> Any:
        svc.check_model(req.model)
        layers = list(svc.embedder.spec.layers)
        want = req.layers or layers
        bad = [x for x in want if x not in layers]
        if bad:
            raise ApiError(400, f"layer(s) {bad} are not served; this model serves layers {layers}", "layers",
                           "invalid_layers")
        if (req.items is None) == (req.item_keys is None):
            raise ApiError(400, "send either items (to embed) or item_keys (to look up), not both", "items")
        if req.items is not None:
            _check_count(len(req.items), svc.limits, "items")
            for i, it in enumerate(req.items):
                _text(it.prompt, f"items[{i}].prompt")
                _text(it.response, f"items[{i}].response")
                if not it.prompt and not it.response:
                    raise ApiError(400, f"items[{i}] has neither prompt nor response: nothing to embed",
                                   f"items[{i}]", "empty_input")
            vecs, cached, keys = await svc.embed([it.prompt for it in req.items], [it.response for it in req.items])
            found = [True] * len(keys)
        else:
            keys = req.item_keys or []
            _check_count(len(keys), svc.limits, "item_keys")
            bad_keys = [k for k in keys if len(k) != 32 or any(c not in "0123456789abcdef" for c in k)]
            if bad_keys:
                raise ApiError(400, f"item key {bad_keys[0]!r} is not a 32-digit lowercase hex key", "item_keys",
                               "invalid_item_key")
            got = await run_in_threadpool(svc.cache.lookup, keys)
            svc.metrics.hits.inc(len(got))
            found = [k in got for k in keys]
            vecs = [got.get(k) for k in keys]
            cached = found
        if ARROW in request.headers.get("accept", ""):
            table = wire.embed_table(keys, vecs, cached, want, svc.embedder.dim)
            return Response(wire.to_ipc(table), media_type=ARROW)
        return {"model": svc.model_name, "model_hash": svc.model_hash,
                "items": [{"item_key": k, "found": f, "cached": c,
                           "n_tokens": v.n_tokens if v else None, "truncated": v.truncated if v else None,
                           "vectors": {str(x): _encode(v.vectors[x], req.encoding_format) for x in want} if v else None}
                          for k, f, c, v in zip(keys, found, cached, vecs)]}

    # ------------------------------------------------------------ datasets
    @app.put("/v1/datasets")
    async def put_dataset(request: Request, name: str | None = None, kind: str | None = None,
                          dataset_hash: str | None = None) -> dict[str, Any]:
        body = await request.body()
        try:
            table = await run_in_threadpool(wire.read_upload, body)
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, KeyError) as e:
            raise ApiError(400, f"the body is not an Arrow IPC stream of the normalised row schema ({e})".replace(
                "\n", " ")[:400], None, "invalid_rows") from None
        got = await run_in_threadpool(wire.store_upload, svc.store, table, name or "uploaded")
        if dataset_hash is not None and got["dataset_hash"] != dataset_hash:
            raise ApiError(400, f"the rows hash to {got['dataset_hash'][:12]}, not {dataset_hash[:12]}: the client "
                                "and server normalised differently, or the upload was damaged", "dataset_hash",
                           "hash_mismatch")
        return got

    # ------------------------------------------------------------- entries
    @app.post("/v1/entries", status_code=202)
    async def post_entry(req: EntryRequest) -> dict[str, Any]:
        dh = req.dataset.lower()
        if not svc.store.has_dataset(dh):
            raise ApiError(404, f"dataset {req.dataset!r} has no rows here; upload it with PUT /v1/datasets",
                           "dataset", "dataset_not_found")
        kind, name, source = req.kind, req.name, req.source
        if kind is None or name is None:  # known from another model's entry of the same dataset
            other = next((e for e in svc.store.entries() if e.dataset_hash == dh), None)
            if other is None and kind is None:
                raise ApiError(400, "kind is needed for a dataset no entry knows yet: pairwise, multi or pointwise",
                               "kind")
            kind = kind or other.kind
            name = name or (other.dataset_name if other else f"uploaded-{dh[:12]}")
            source = source or (other.dataset_source if other else {})
        e = svc.store.entry(svc.model_hash, dh)
        if e is not None and e.status == "complete":
            return {"entry": e.summary(), "job": None}
        job = await run_in_threadpool(svc.jobs.start, dh, name, kind, source or {})
        return {"entry": None, "job": job.as_dict()}

    @app.get("/v1/entries")
    async def list_entries() -> dict[str, Any]:
        entries = await run_in_threadpool(svc.store.entries)
        return {"object": "list", "data": [wire.entry_json(e) for e in entries]}

    def resolve(model: str, dataset: str) -> Any:
        try:
            return svc.store.resolve(model, dataset)
        except EmbrmError as e:
            raise ApiError(404, str(e), None, "entry_not_found") from None

    @app.get("/v1/entries/{model}/{dataset}")
    async def get_entry(model: str, dataset: str) -> dict[str, Any]:
        e = await run_in_threadpool(resolve, model, dataset)
        job = svc.jobs.get(e.model_hash, e.dataset_hash)
        return {"entry": wire.entry_json(e), "job": job.as_dict() if job else None}

    @app.get("/v1/entries/{model}/{dataset}/vectors", response_model=None)
    async def pull(request: Request, model: str, dataset: str, layer: int | None = None, offset: int = 0,
                   limit: int | None = None, partial: bool = False, texts: bool = False) -> Any:
        e = await run_in_threadpool(resolve, model, dataset)
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
        stream = prefetched(wire.entry_stream(svc.store, e, layer, offset, limit, partial, texts))
        return StreamingResponse(stream, media_type=ARROW, headers={"ETag": etag})

    return app


def wrap(app: FastAPI, svc: Service) -> Any:
    """The ASGI app with the outer layers: body limits, default-deny auth, request metrics."""
    from embrm.serve.middleware import Guard

    return Guard(app, svc)


__all__ = ["ARROW", "Limits", "Service", "create_app", "wrap"]
