"""Rewards in the request shapes RLHF and Best-of-N frameworks already send: embrm's
``/v1/rewards``, OpenRLHF's ``/get_reward``, rerank (Cohere, Jina, vLLM) and vLLM's
``/score``. The aggregation's name is checked here, once, by its type
(:data:`Aggregation`): the scoring below the routes trusts it."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from embrm.rm.metrics import AGGREGATIONS, COEF_RANGE
from embrm.serve.protocol.embeddings import Usage
from embrm.serve.protocol.items import EmbedItem

Aggregation = Literal["mean", "min", "single", "mean-var", "mean-std"]
assert set(Aggregation.__args__) == set(AGGREGATIONS)  # type: ignore[attr-defined]  # one list: the trainers'


def coef(aggregation: str, lam: float | None, beta: float | None) -> float:
    """The coefficient of mean-var (``lambda``) or mean-std (``beta``); 1 by default."""
    if aggregation == "mean-var":
        return 1.0 if lam is None else lam
    if aggregation == "mean-std":
        return 1.0 if beta is None else beta
    return 1.0


# ------------------------------------------------------------------- native
class RewardsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    items: list[EmbedItem]
    rm: str | None = Field(None, max_length=64, description="a served reward model (default: the first)")
    aggregation: Aggregation = "mean"
    lam: float | None = Field(None, alias="lambda", allow_inf_nan=False, ge=COEF_RANGE[0], le=COEF_RANGE[1],
                              description="lambda of mean-var")
    beta: float | None = Field(None, allow_inf_nan=False, ge=COEF_RANGE[0], le=COEF_RANGE[1],
                               description="beta of mean-std")
    members: bool = Field(False, description="also return every member's reward")


class Reward(BaseModel):
    index: int
    reward: float
    std: float = Field(description="the members' spread")
    item_key: str
    cached: bool
    n_tokens: int
    truncated: bool
    members: list[float] | None = Field(None, description="every member's reward, when asked for")


class RewardsResponse(BaseModel):
    object: Literal["list"]
    rm: str
    aggregation: Aggregation
    model: str
    data: list[Reward]
    usage: Usage


# ----------------------------------------------------------------- OpenRLHF
class OpenRLHFRequest(BaseModel):
    """OpenRLHF's remote reward model body: ``query`` is each prompt followed by its response."""

    model_config = ConfigDict(extra="ignore")
    query: list[str]
    prompts: list[str] | None = None
    labels: list[Any] | None = None


class OpenRLHFResponse(BaseModel):
    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]]


# ------------------------------------------------------------------ rerank
class Document(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text: str


class RerankRequest(BaseModel):
    """Cohere's, Jina's and vLLM's rerank body; ``model`` names the reward model."""

    model_config = ConfigDict(extra="ignore")
    query: str
    documents: list[str | Document]
    model: str | None = Field(None, max_length=64)
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = True


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: Document | None = None


class RerankUsage(BaseModel):
    total_tokens: int


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult]
    usage: RerankUsage


# ------------------------------------------------------------------- score
class ScoreRequest(BaseModel):
    """vLLM's ``/score`` body: ``text_1`` the prompt(s), ``text_2`` the candidates."""

    model_config = ConfigDict(extra="ignore")
    text_1: str | list[str]
    text_2: str | list[str]
    model: str | None = Field(None, max_length=64)


class Score(BaseModel):
    index: int
    object: Literal["score"]
    score: float


class ScoreResponse(BaseModel):
    id: str
    object: Literal["list"]
    created: int
    model: str
    data: list[Score]
    usage: Usage


# ------------------------------------------------------------------ listing
class RewardModelListing(BaseModel):
    """A served reward model, servable or not (``problem`` says why not)."""

    model_config = ConfigDict(extra="allow")  # the run's summary: method, members, fingerprint, metrics...
    name: str
    source: str
    servable: bool
    problem: str | None


class RewardModelList(BaseModel):
    object: Literal["list"]
    data: list[RewardModelListing]
