"""A client for the reward models an ``embrm serve`` serves, without torch or transformers.

>>> rm = RewardClient("http://127.0.0.1:8000", rm="hh-bt")
>>> rm.rewards(["Hi?"] * 2, [" Hello!", " Go away."])            # aggregated rewards
>>> rm.rerank("Hi?", [" Hello!", " Go away."])                   # best first
>>> GRPOTrainer(..., reward_funcs=[rm.reward_func])               # TRL

``reward_func`` is called the way TRL's trainers call reward functions:
``(prompts=..., completions=..., **kwargs) -> list[float]``, with plain strings or
conversational message lists (a prompt of one user message becomes its text, a longer
one the same JSON list embrm's dataset readers make of it; a completion is its assistant
messages' text).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from embrm.errors import EmbrmError
from embrm.store.service import HttpClient

Message = dict[str, Any]


def _prompt_text(p: str | Sequence[Message]) -> str:
    if isinstance(p, str):
        return p
    msgs = [{"role": m["role"], "content": m["content"]} for m in p]
    if len(msgs) == 1 and msgs[0]["role"] == "user":
        return str(msgs[0]["content"])
    return json.dumps(msgs, ensure_ascii=False)  # as embrm's readers write a multi-turn prompt


def _completion_text(c: str | Sequence[Message]) -> str:
    if isinstance(c, str):
        return c
    return "".join(str(m["content"]) for m in c if m.get("role", "assistant") == "assistant")


class RewardClient:
    """Rewards from a served reward model (``GET /v1/rms`` lists them)."""

    def __init__(self, url: str, token: str | None = None, rm: str | None = None, aggregation: str = "mean",
                 coef: float = 1.0, timeout: float = 300.0, batch: int = 1024):
        self.http = HttpClient(url, token if token is not None else os.environ.get("EMBRM_TOKEN"), timeout)
        self.rm, self.aggregation, self.coef, self.batch = rm, aggregation, coef, batch

    def models(self) -> list[dict[str, Any]]:
        return self.http.json("GET", "/v1/rms")["data"]

    def score(self, prompts: Sequence[str], responses: Sequence[str], aggregation: str | None = None,
              coef: float | None = None, members: bool = False) -> list[dict[str, Any]]:
        """Per item: reward, std (the members' spread), item_key, cached, n_tokens,
        truncated (and ``members`` when asked). Long lists go ``batch`` items a request."""
        if len(prompts) != len(responses):
            raise EmbrmError(f"{len(prompts)} prompts for {len(responses)} responses")
        how = aggregation or self.aggregation
        c = self.coef if coef is None else coef
        out: list[dict[str, Any]] = []
        for s in range(0, len(prompts), self.batch):
            body: dict[str, Any] = {"items": [{"prompt": p, "response": r} for p, r in
                                              zip(prompts[s:s + self.batch], responses[s:s + self.batch])],
                                    "rm": self.rm, "aggregation": how, "members": members}
            if how == "mean-var":
                body["lambda"] = c
            elif how == "mean-std":
                body["beta"] = c
            out += self.http.json("POST", "/v1/rewards", body)["data"]
        return out

    def rewards(self, prompts: Sequence[str], responses: Sequence[str], aggregation: str | None = None,
                coef: float | None = None) -> list[float]:
        """The aggregated reward of each (prompt, response)."""
        return [d["reward"] for d in self.score(prompts, responses, aggregation, coef)]

    def rerank(self, prompt: str, candidates: Sequence[str], top_n: int | None = None) -> list[dict[str, Any]]:
        """``[{index, relevance_score}]``, best first: Best-of-N over ``candidates``."""
        body = {"query": prompt, "documents": list(candidates), "model": self.rm, "top_n": top_n,
                "return_documents": False}
        return self.http.json("POST", "/v1/rerank", body)["results"]

    @property
    def reward_func(self) -> Callable[..., list[float]]:
        """A TRL reward function over this client (see the module docstring), named
        ``embrm_<rm>`` (TRL logs each reward function under its ``__name__``)."""

        def reward(prompts: Sequence[str | Sequence[Message]] | None = None,
                   completions: Sequence[str | Sequence[Message]] | None = None, **kwargs: Any) -> list[float]:
            if prompts is None or completions is None:
                raise EmbrmError("a reward function is called with prompts= and completions=")
            return self.rewards([_prompt_text(p) for p in prompts], [_completion_text(c) for c in completions])

        reward.__name__ = reward.__qualname__ = f"embrm_{self.rm or 'reward'}"
        return reward


__all__ = ["RewardClient"]
