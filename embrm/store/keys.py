"""Content keys: what makes two embeddings the same.

* An **item key** hashes the exact (prompt, response) texts. Within one model
  fingerprint a vector is computed and stored once per item key, whichever dataset
  asked for it.
* A **model fingerprint** hashes everything that changes a vector: weights (hub id and
  commit, or a hash of the weight files), dtype, pooling, layers, max length,
  truncation side and input format or chat-template text.
* A **dataset fingerprint** hashes the normalised rows in order.

Each fingerprint has a short human-readable name beside its hash; the hash is the key.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

#: Hex digits shown when a hash is printed next to its name.
SHORT = 12


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def item_key(prompt: str, response: str) -> str:
    """Hash of the exact texts. Length-prefixed, so ("ab", "c") != ("a", "bc")."""
    p = prompt.encode("utf-8")
    r = response.encode("utf-8")
    h = hashlib.sha256()
    h.update(len(p).to_bytes(8, "little"))
    h.update(p)
    h.update(len(r).to_bytes(8, "little"))
    h.update(r)
    return h.hexdigest()[:32]


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal configs hash equal."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class ModelFingerprint:
    """Everything that changes a vector. Two extractions with equal fingerprints may
    share vectors; anything that differs here gives a different store entry.

    ``weights`` is the hub commit for hub models or a sha256 of the weight files for a
    local directory or GGUF file, so renaming a directory does not change the key but
    changing one byte of the weights does.
    """

    source: str
    weights: str
    dtype: str
    pooling: str
    layers: tuple[int, ...]
    max_length: int
    truncation_side: str
    input_format: str
    template: str = ""
    name_hint: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    @property
    def hash(self) -> str:
        d = self.as_dict()
        d.pop("name_hint")  # display only
        return _sha(canonical_json(d).encode())

    @property
    def name(self) -> str:
        base = self.name_hint or self.source.rstrip("/").split("/")[-1]
        layers = ",".join(str(x) for x in self.layers)
        return f"{base}/{self.dtype}/{self.pooling}/L{layers}/{self.input_format}/{self.max_length}"


FINGERPRINT_PARTS = ("source", "weights", "dtype", "pooling", "layers", "max_length", "truncation_side",
                     "input_format", "template", "name_hint")


def fingerprint_of_config(cfg: dict[str, Any], claimed_hash: str) -> ModelFingerprint:
    """The fingerprint an entry's recorded ``model_config`` describes, checked against the
    hash claimed for it (a bundle's manifest, a copy into a service); one line if the
    parts are missing, of the wrong types, or hash to something else."""
    from embrm.errors import EmbrmError

    lacking = [k for k in FINGERPRINT_PARTS[:-2] if k not in cfg]
    if lacking:
        raise EmbrmError(f"the model configuration lacks the fingerprint part(s) {lacking}")
    try:
        fp = ModelFingerprint(**{k: cfg.get(k, "") for k in FINGERPRINT_PARTS} | {"layers": tuple(cfg["layers"])})
        h = fp.hash
    except (TypeError, ValueError):
        raise EmbrmError("the model configuration's fingerprint parts have the wrong types") from None
    if h != claimed_hash:
        raise EmbrmError(f"the model fingerprint's parts hash to {h[:12]}, not the {claimed_hash[:12]} claimed")
    return fp


@dataclass
class DatasetHasher:
    """Streams normalised rows into a content hash, in order, without keeping them."""

    _h: Any = field(default_factory=hashlib.sha256)
    count: int = 0

    def update(self, row: dict[str, Any]) -> None:
        line = canonical_json(row).encode()
        self._h.update(len(line).to_bytes(8, "little"))
        self._h.update(line)
        self.count += 1

    def update_many(self, rows: Iterable[dict[str, Any]]) -> None:
        for r in rows:
            self.update(r)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def short(h: str) -> str:
    return h[:SHORT]
