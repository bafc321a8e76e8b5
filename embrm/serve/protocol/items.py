"""Texts and items in requests, and the checks they share (every route that embeds or
scores uses these, so an item is accepted or refused the same way everywhere)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from embrm.serve.errors import ApiError


class EmbedItem(BaseModel):
    """One item: a prompt and the response to embed or score with it."""

    model_config = ConfigDict(extra="forbid")
    prompt: str
    response: str


def check_text(v: str, param: str) -> str:
    """Text that can be encoded as UTF-8 (JSON may carry a lone surrogate that cannot)."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"{param} is not valid Unicode (a lone surrogate?); send UTF-8 text", param,
                       "invalid_text") from None
    return v


def check_count(n: int, max_items: int, param: str) -> None:
    """At least one item, and no more than the service takes in one request."""
    if n == 0:
        raise ApiError(400, f"{param} is empty: send at least one item", param, "empty_input")
    if n > max_items:
        raise ApiError(413, f"{n} items in one request; the limit is {max_items}: split the request",
                       param, "too_many_items")


def check_items(items: list[EmbedItem], max_items: int, param: str = "items") -> None:
    """Items that can be embedded: a count within the limit, UTF-8 text, not both empty."""
    check_count(len(items), max_items, param)
    for i, it in enumerate(items):
        check_text(it.prompt, f"{param}[{i}].prompt")
        check_text(it.response, f"{param}[{i}].response")
        if not it.prompt and not it.response:
            raise ApiError(400, f"{param}[{i}] has neither prompt nor response: nothing to embed", f"{param}[{i}]",
                           "empty_input")
