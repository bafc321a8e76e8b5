"""``POST /v1/embeddings`` (OpenAI's shape) and ``POST /v1/embed`` (embrm's): requests,
answers, and the shaping of vectors into JSON (float lists or base64) and Arrow."""
from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from embrm.serve.protocol.items import EmbedItem
from embrm.serve.worker import ItemVectors
from embrm.store import schema as S


class EmbeddingsRequest(BaseModel):
    """OpenAI's ``POST /v1/embeddings`` body; ``prompt`` is embrm's extension."""

    model_config = ConfigDict(extra="ignore")
    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None
    prompt: str = Field("", description="embrm: a prompt the input texts answer (default: none)")


class EmbedRequest(BaseModel):
    """embrm's native ``POST /v1/embed`` body: items to embed, or item keys to look up."""

    model_config = ConfigDict(extra="forbid")
    items: list[EmbedItem] | None = None
    item_keys: list[str] | None = None
    layers: list[int] | None = None
    encoding_format: Literal["float", "base64"] = "float"
    model: str | None = None


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class Embedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian float32")


class EmbeddingsResponse(BaseModel):
    object: Literal["list"]
    model: str
    data: list[Embedding]
    usage: Usage


class EmbeddedItem(BaseModel):
    item_key: str
    found: bool
    cached: bool
    n_tokens: int | None
    truncated: bool | None
    vectors: dict[str, list[float] | str] | None = Field(description="layer -> vector (None: key not found)")


class EmbedResponse(BaseModel):
    """``POST /v1/embed`` in JSON (``Accept: application/vnd.apache.arrow.stream`` gives
    :func:`embed_table` instead)."""

    model: str
    model_hash: str
    items: list[EmbeddedItem]


def encode(v: np.ndarray, fmt: str) -> Any:
    v = np.asarray(v, dtype="<f4")
    return base64.b64encode(v.tobytes()).decode() if fmt == "base64" else v.tolist()


def embed_table(keys: list[str], vecs: list[ItemVectors | None], cached: list[bool], layers: list[int],
                dim: int) -> pa.Table:
    """``POST /v1/embed`` in Arrow: the store's vector schema, plus ``found`` and ``cached``."""
    sch = S.vector_schema(dim, "float32", tuple(layers), provenance=False)
    n = len(keys)
    cols: list[pa.Array] = [pa.array(keys, pa.string()),
                            pa.array([v.n_tokens if v else 0 for v in vecs], pa.int32()),
                            pa.array([v.truncated if v else False for v in vecs], pa.bool_())]
    for layer in layers:
        m = np.zeros((n, dim), np.float32)
        for i, v in enumerate(vecs):
            if v is not None:
                m[i] = v.vectors[layer]
        cols.append(pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), dim))
    table = pa.Table.from_arrays(cols, schema=sch)
    table = table.append_column("found", pa.array([v is not None for v in vecs]))
    return table.append_column("cached", pa.array(cached))
