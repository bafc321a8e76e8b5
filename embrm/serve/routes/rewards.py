"""Rewards, in the request shapes RLHF and Best-of-N frameworks already send.

Every route embeds through :meth:`Service.embed` (the cache, the store, the model thread
with single flight: a hit costs no forward pass, a miss is computed once and stored)
and scores with a served run's ensemble (:mod:`embrm.serve.rewards`):

* ``GET /v1/rms``: the reward models, servable or not (and why);
* ``POST /v1/rewards``: embrm's native route: per item the aggregated reward, the
  members' spread, optionally every member; JSON or Arrow;
* ``POST /get_reward``: OpenRLHF's remote reward model (``query`` = prompt + response);
* ``POST /v1/rerank`` (also ``/rerank``, ``/v2/rerank``): Cohere/Jina/vLLM reranking, the
  query being the prompt and the documents its candidates;
* ``POST /score`` (also ``/v1/score``): vLLM's score route for one prompt and candidates.

Requests and answers are :mod:`embrm.serve.protocol.rewards`.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from embrm.errors import EmbrmError
from embrm.rm.metrics import COEF_NAME, COEF_RANGE
from embrm.serve.deps import Svc
from embrm.serve.errors import ApiError
from embrm.serve.protocol.errors import COMMON, errors, ok
from embrm.serve.protocol.items import EmbedItem, check_count, check_items, check_text
from embrm.serve.protocol.rewards import (
    Aggregation,
    OpenRLHFRequest,
    OpenRLHFResponse,
    RerankRequest,
    RerankResponse,
    RewardModelList,
    RewardsRequest,
    RewardsResponse,
    ScoreRequest,
    ScoreResponse,
    coef,
)
from embrm.serve.rewards import ServedRun, combine
from embrm.serve.service import Service
from embrm.store.wire import ARROW, to_ipc

router = APIRouter(responses=COMMON)
SCORING = errors(404, 413, 429)  # an unknown reward model; too many items; the model's queue full


class Scored:
    """What every reward route computes: the run, member scores and the items' facts."""

    def __init__(self, run: ServedRun, scores: np.ndarray, vecs: list[Any], cached: list[bool], keys: list[str]):
        self.run, self.scores, self.vecs, self.cached, self.keys = run, scores, vecs, cached, keys

    @property
    def tokens(self) -> int:
        return int(sum(v.n_tokens for v in self.vecs))


def _run(svc: Service, name: str | None) -> ServedRun:
    try:
        return svc.rms.get(name)
    except LookupError as e:
        raise ApiError(404, str(e), "rm", "rm_not_found") from None
    except EmbrmError as e:
        raise ApiError(400, str(e), "rm", "rm_not_servable") from None


async def score_items(svc: Service, rm: str | None, prompts: list[str], responses: list[str]) -> Scored:
    """Embed (cache first) and score items with one served run."""
    run = await run_in_threadpool(_run, svc, rm)
    vecs, cached, keys = await svc.embed(prompts, responses)
    scores = await asyncio.wrap_future(svc.rms.score(run, vecs))
    return Scored(run, scores, vecs, cached, keys)


def _combined(s: Scored, how: str, coef: float) -> tuple[np.ndarray, np.ndarray]:
    """The aggregated rewards, each finite, or a 400 naming the item (and the coefficient)."""
    try:
        return combine(s.scores, how, coef)
    except EmbrmError as e:
        param = COEF_NAME.get(how) if COEF_NAME.get(how, "?") in str(e) else None
        raise ApiError(400, f"reward model {s.run.name!r}: {e}", param, "non_finite_reward") from None


def _usage(s: Scored) -> dict[str, int]:
    return {"prompt_tokens": s.tokens, "total_tokens": s.tokens}


# ------------------------------------------------------------------ listing
@router.get("/v1/rms", responses=ok(RewardModelList))
async def list_rms(svc: Svc) -> dict[str, Any]:
    runs = await run_in_threadpool(svc.rms.list, True)
    return {"object": "list", "data": [r.listing() for r in runs]}


# ------------------------------------------------------------------- native
@router.post("/v1/rewards", response_model=None, responses={**ok(RewardsResponse), **SCORING})
async def rewards(svc: Svc, req: RewardsRequest, request: Request) -> Any:
    check_items(req.items, svc.settings.max_items)
    s = await score_items(svc, req.rm, [it.prompt for it in req.items], [it.response for it in req.items])
    reward, std = _combined(s, req.aggregation, coef(req.aggregation, req.lam, req.beta))
    if ARROW in request.headers.get("accept", ""):
        cols = {"item_key": pa.array(s.keys, pa.string()), "reward": pa.array(reward, pa.float32()),
                "std": pa.array(std, pa.float32()), "cached": pa.array(s.cached),
                "n_tokens": pa.array([v.n_tokens for v in s.vecs], pa.int32()),
                "truncated": pa.array([v.truncated for v in s.vecs])}
        if req.members:
            m = s.scores.shape[0]
            cols["members"] = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(s.scores.T).ravel()), m)
        return Response(to_ipc(pa.table(cols)), media_type=ARROW)
    data = [{"index": i, "reward": float(reward[i]), "std": float(std[i]), "item_key": s.keys[i],
             "cached": s.cached[i], "n_tokens": s.vecs[i].n_tokens, "truncated": s.vecs[i].truncated,
             **({"members": s.scores[:, i].tolist()} if req.members else {})} for i in range(len(s.keys))]
    return {"object": "list", "rm": s.run.name, "aggregation": req.aggregation, "model": svc.model_name,
            "data": data, "usage": _usage(s)}


# ----------------------------------------------------------------- OpenRLHF
@router.post("/get_reward", responses={**ok(OpenRLHFResponse), **SCORING})
async def get_reward(svc: Svc, req: OpenRLHFRequest, rm: Annotated[str | None, Query(max_length=64)] = None,
                     aggregation: Aggregation = "mean",
                     lam: Annotated[float | None, Query(alias="lambda", allow_inf_nan=False, ge=COEF_RANGE[0],
                                                        le=COEF_RANGE[1])] = None,
                     beta: Annotated[float | None, Query(allow_inf_nan=False, ge=COEF_RANGE[0],
                                                         le=COEF_RANGE[1])] = None) -> dict[str, Any]:
    """``?rm=NAME&aggregation=mean-var&lambda=0.5``: the reward model and aggregation are
    query parameters, since OpenRLHF sends only its own fields in the body."""
    check_count(len(req.query), svc.settings.max_items, "query")
    if req.prompts is None or len(req.prompts) != len(req.query):
        raise ApiError(400, f"prompts must list the prompt of each of the {len(req.query)} queries, so that each "
                            "query splits into prompt and response", "prompts", "prompts_needed")
    responses = []
    for i, (q, p) in enumerate(zip(req.query, req.prompts)):
        check_text(q, f"query[{i}]")
        check_text(p, f"prompts[{i}]")
        if not q.startswith(p):
            raise ApiError(400, f"query[{i}] does not start with prompts[{i}]; each query must be its prompt followed "
                                "by the response", f"query[{i}]", "query_without_prompt")
        if not q:
            raise ApiError(400, f"query[{i}] is empty: nothing to score", f"query[{i}]", "empty_input")
        responses.append(q[len(p):])
    s = await score_items(svc, rm, req.prompts, responses)
    reward, std = _combined(s, aggregation, coef(aggregation, lam, beta))
    rewards = [float(x) for x in reward]
    return {"rewards": rewards, "scores": rewards, "extra_logs": {"reward_std": [float(x) for x in std]}}


# ------------------------------------------------------------------ rerank
@router.post("/v1/rerank", responses={**ok(RerankResponse), **SCORING})
@router.post("/v2/rerank", responses={**ok(RerankResponse), **SCORING})
@router.post("/rerank", responses={**ok(RerankResponse), **SCORING})
async def rerank(svc: Svc, req: RerankRequest) -> dict[str, Any]:
    docs = [d if isinstance(d, str) else d.text for d in req.documents]
    check_count(len(docs), svc.settings.max_items, "documents")
    items = [EmbedItem(prompt=req.query, response=d) for d in docs]
    check_items(items, svc.settings.max_items, "documents")
    s = await score_items(svc, req.model, [req.query] * len(docs), docs)
    reward, _ = _combined(s, "mean", 1.0)
    order = np.argsort(-reward, kind="stable")[: req.top_n or len(docs)]
    results = [{"index": int(i), "relevance_score": float(reward[i]),
                **({"document": {"text": docs[i]}} if req.return_documents else {})} for i in order]
    return {"id": f"rerank-{uuid.uuid4().hex}", "model": s.run.name, "results": results,
            "usage": {"total_tokens": s.tokens}}


# ------------------------------------------------------------------- score
@router.post("/v1/score", responses={**ok(ScoreResponse), **SCORING})
@router.post("/score", responses={**ok(ScoreResponse), **SCORING})
async def score(svc: Svc, req: ScoreRequest) -> dict[str, Any]:
    t2 = [req.text_2] if isinstance(req.text_2, str) else req.text_2
    t1 = [req.text_1] * len(t2) if isinstance(req.text_1, str) else req.text_1
    if len(t1) != len(t2):
        raise ApiError(400, f"text_1 has {len(t1)} texts and text_2 {len(t2)}: give one text_1, or one per text_2",
                       "text_1", "length_mismatch")
    items = [EmbedItem(prompt=a, response=b) for a, b in zip(t1, t2)]
    check_items(items, svc.settings.max_items, "text_2")
    s = await score_items(svc, req.model, t1, t2)
    reward, _ = _combined(s, "mean", 1.0)
    return {"id": f"score-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()), "model": s.run.name,
            "data": [{"index": i, "object": "score", "score": float(r)} for i, r in enumerate(reward)],
            "usage": _usage(s)}
