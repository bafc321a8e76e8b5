"""OpenAI's ``POST /v1/embeddings`` and embrm's native ``POST /v1/embed``.

Both go through :meth:`Service.embed` (cache, store, model thread with single flight);
``/v1/embed`` also looks stored vectors up by item key and answers in Arrow when asked.
Requests, answers and their shaping are :mod:`embrm.serve.protocol.embeddings`.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from embrm.serve.deps import Svc
from embrm.serve.errors import ApiError
from embrm.serve.protocol.embeddings import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbedRequest,
    EmbedResponse,
    embed_table,
    encode,
)
from embrm.serve.protocol.errors import COMMON, errors, ok
from embrm.serve.protocol.items import check_count, check_items, check_text
from embrm.store.wire import ARROW, to_ipc

router = APIRouter(responses=COMMON)
ITEM_KEY_CHARS = set("0123456789abcdef")


@router.post("/v1/embeddings", responses={**ok(EmbeddingsResponse), **errors(404, 413, 429)})
async def embeddings(svc: Svc, req: EmbeddingsRequest) -> dict[str, Any]:
    svc.check_model(req.model)
    if req.dimensions is not None and req.dimensions != svc.embedder.dim:
        raise ApiError(400, f"dimensions={req.dimensions} is not available: this model's vectors have "
                            f"{svc.embedder.dim}", "dimensions", "invalid_dimensions")
    texts = [req.input] if isinstance(req.input, str) else req.input
    if texts and not all(isinstance(t, str) for t in texts):
        raise ApiError(400, "input is token ids; send text: embrm tokenizes with the model's own tokenizer",
                       "input", "token_ids_not_supported")
    check_count(len(texts), svc.settings.max_items, "input")
    prompt = check_text(req.prompt, "prompt")
    for i, t in enumerate(texts):
        check_text(t, f"input[{i}]")
        if not t and not prompt:
            raise ApiError(400, f"input[{i}] is empty and there is no prompt: nothing to embed", f"input[{i}]",
                           "empty_input")
    vecs, _, _ = await svc.embed([prompt] * len(texts), texts)
    layer = svc.embedder.spec.layers[0]
    n_tok = sum(min(v.n_tokens, svc.embedder.spec.max_length) for v in vecs)
    return {"object": "list", "model": svc.model_name,
            "data": [{"object": "embedding", "index": i, "embedding": encode(v.vectors[layer], req.encoding_format)}
                     for i, v in enumerate(vecs)],
            "usage": {"prompt_tokens": n_tok, "total_tokens": n_tok}}


@router.post("/v1/embed", response_model=None, responses={**ok(EmbedResponse), **errors(404, 413, 429)})
async def embed(svc: Svc, req: EmbedRequest, request: Request) -> Any:
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
        check_items(req.items, svc.settings.max_items)
        vecs, cached, keys = await svc.embed([it.prompt for it in req.items], [it.response for it in req.items])
        found = [True] * len(keys)
    else:
        keys = req.item_keys or []
        check_count(len(keys), svc.settings.max_items, "item_keys")
        bad_keys = [k for k in keys if len(k) != 32 or not set(k) <= ITEM_KEY_CHARS]
        if bad_keys:
            raise ApiError(400, f"item key {bad_keys[0][:40]!r} is not a 32-digit lowercase hex key", "item_keys",
                           "invalid_item_key")
        got = await run_in_threadpool(svc.cache.lookup, keys)
        svc.metrics.hits.inc(len(got))
        found = [k in got for k in keys]
        vecs = [got.get(k) for k in keys]
        cached = found
    if ARROW in request.headers.get("accept", ""):
        return Response(to_ipc(embed_table(keys, vecs, cached, want, svc.embedder.dim)), media_type=ARROW)
    return {"model": svc.model_name, "model_hash": svc.model_hash,
            "items": [{"item_key": k, "found": f, "cached": c,
                       "n_tokens": v.n_tokens if v else None, "truncated": v.truncated if v else None,
                       "vectors": {str(x): encode(v.vectors[x], req.encoding_format) for x in want} if v else None}
                      for k, f, c, v in zip(keys, found, cached, vecs)]}

