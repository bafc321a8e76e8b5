"""Copies into the service (``embrm store copy --to http://...``): the request that opens
an entry, the model-hash check, and what the write-protocol routes answer."""
from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from embrm.serve.errors import ApiError
from embrm.serve.protocol.entries import Kind
from embrm.store.catalog import NAME_MAX

HASH = r"^[0-9a-f]{64}$"


class Register(BaseModel):
    """``POST /v1/entries/register``: an entry of an uploaded dataset, under a model whose
    fingerprint parts (``model_config``) must hash to ``model_hash``."""

    model_config = ConfigDict(extra="forbid")
    model_hash: str = Field(pattern=HASH)
    model_name: str = Field(max_length=NAME_MAX)
    model_config_: dict[str, Any] = Field(alias="model_config", max_length=64)
    dataset_hash: str = Field(pattern=HASH)
    dataset_name: str = Field(max_length=NAME_MAX)
    dataset_source: dict[str, str | int | float | bool | None] = Field(default_factory=dict, max_length=32)
    kind: Kind
    n_rows: int = Field(ge=1)


class Committed(BaseModel):
    """``PUT /v1/vectors/{model_hash}``: rows new to the store, of the rows sent."""

    added: int
    rows: int


class VectorTableInfo(BaseModel):
    """``GET /v1/vectors/{model_hash}/info``: the model's vector table (null: none yet)."""

    info: dict[str, Any] | None


class RegisteredEntry(BaseModel):
    """``POST /v1/entries/register`` and ``.../finish``: the entry as the catalog has it."""

    entry: dict[str, Any]


def checked_model_hash(value: str) -> str:
    """A model hash from a path: 64 lowercase hex digits, or a 400."""
    if not re.fullmatch(HASH, value):
        raise ApiError(400, "the model hash must be 64 lowercase hex digits", "model_hash", "invalid_model_hash")
    return value
