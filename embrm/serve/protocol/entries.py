"""Datasets and entries: uploads, dataset jobs, the catalog, removal and ``gc``."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from embrm.errors import EmbrmError
from embrm.serve.errors import ApiError
from embrm.store.catalog import NAME_MAX

if TYPE_CHECKING:
    from embrm.serve.service import Service
    from embrm.store.catalog import Entry

Kind = Literal["pairwise", "multi", "pointwise"]


class EntryRequest(BaseModel):
    """``POST /v1/entries``: extract an uploaded dataset (by hash or unique prefix)."""

    model_config = ConfigDict(extra="forbid")
    dataset: str = Field(max_length=64)
    name: str | None = Field(None, max_length=NAME_MAX)
    kind: Kind | None = None
    source: dict[str, str | int | float | bool | None] | None = Field(None, max_length=32)


class Upload(BaseModel):
    """``PUT /v1/datasets``: what was stored."""

    dataset_hash: str
    rows: int
    name: str
    kind: Kind


class EntryInfo(BaseModel):
    """A catalog entry, as ``embrm store ls --json`` lists it."""

    model_config = ConfigDict(extra="allow")
    model: str
    model_hash: str
    dataset: str
    dataset_hash: str
    kind: str
    rows: int
    n_rows: int
    dim: int
    dtype: str
    layers: list[int]
    status: str
    truncated: int


class JobState(BaseModel):
    """A dataset job (:class:`embrm.serve.jobs.Job`)."""

    model_config = ConfigDict(extra="allow")
    model_hash: str
    dataset_hash: str
    dataset_name: str
    rows: int
    status: Literal["running", "complete", "partial", "failed", "stopped"]
    done_rows: int
    computed: int
    cached: int
    error: str | None
    tokens_per_second: float | None


class EntryState(BaseModel):
    """An entry and its job (either may be None: a job just started has no entry listed
    yet in ``POST /v1/entries``'s answer; an entry nobody extracts here has no job)."""

    entry: EntryInfo | None
    job: JobState | None


class EntryList(BaseModel):
    object: Literal["list"]
    data: list[EntryInfo]
    total: int
    offset: int
    limit: int | None


class JobList(BaseModel):
    object: Literal["list"]
    data: list[JobState]


class Removed(BaseModel):
    entry: EntryInfo


def listing(data: list[dict[str, Any]], total: int, offset: int, limit: int | None) -> dict[str, Any]:
    """A page of the catalog."""
    return {"object": "list", "data": data, "total": total, "offset": offset, "limit": limit}


def resolve(svc: Service, model: str, dataset: str) -> Entry:
    """The entry a request names, or a 404 (blocking: run it in a thread)."""
    try:
        return svc.store.resolve(model, dataset)
    except EmbrmError as e:
        raise ApiError(404, str(e), None, "entry_not_found") from None
