"""``embrm store verify``: recompute a random sample of an entry's items and compare them
with the stored vectors, per layer (max absolute difference, min cosine).

This is the reproduction check for vectors that came from elsewhere (a bundle, a copy, a
colleague's store): the fingerprint says what the vectors should be; recomputing a
sample here says whether they are.

Tolerance depends on how the two sides computed (:func:`tolerance`). The figures behind
it were measured (docs/sharing.md) with SmolLM2-135M on a 2-core EPYC: float32 on the
same CPU with other batches differs by 5e-7 of the largest component (cosine 1.000000);
bfloat16 weights against float32 by 0.016 of it (min cosine 0.99983). The bounds leave
room: 1e-4 and 0.999999 on one device in float32, 1e-3 and 0.9999 across devices (the
order of accumulation differs; not measured here, no GPU), 0.05 and 0.999 where either
side is half precision.
"""
from __future__ import annotations

import base64
import random
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from embrm.errors import EmbrmError

if TYPE_CHECKING:
    from embrm.store.base import Store
    from embrm.store.catalog import Entry

HALF = ("bfloat16", "float16")


@dataclass(frozen=True)
class Tolerance:
    """Over either bound an item fails: ``rel`` bounds max |stored - recomputed| divided
    by max |stored| of the layer's sample; ``cos`` bounds each item's cosine from below."""

    name: str
    rel: float
    cos: float


def tolerance(stored: list[dict[str, str]], here: dict[str, str]) -> Tolerance:
    """The tolerance for comparing vectors of the ``stored`` provenances with this machine's."""
    dtypes = {s.get("dtype", "") for s in stored} | {here["dtype"]}
    devices = {s.get("device", "") for s in stored} | {here["device"]}
    if dtypes & set(HALF) or "" in dtypes:
        return Tolerance("a half-precision (or unknown dtype) side", 0.05, 0.999)
    if len(devices) > 1:
        return Tolerance("float32 on different devices", 1e-3, 0.9999)
    return Tolerance("float32 on the same device", 1e-4, 0.999999)


@dataclass
class VerifyReport:
    """What a verification found; ``ok`` is False when any sampled item is over tolerance."""

    model: str
    dataset: str
    sampled: int
    layers: dict[int, dict[str, float]]  # layer -> max_abs, rel, min_cos
    tolerance: Tolerance
    failed: list[dict[str, Any]] = field(default_factory=list)  # item key, layer, cos, rel, provenance
    here: dict[str, str] = field(default_factory=dict)
    fingerprint_note: str = ""

    @property
    def ok(self) -> bool:
        return not self.failed

    def lines(self) -> list[str]:
        out = [f"{self.model} x {self.dataset}: recomputed {self.sampled} items here "
               f"({self.here.get('dtype')} on {self.here.get('device')}); tolerance: {self.tolerance.name} "
               f"(max abs diff <= {self.tolerance.rel:g} x max |v|, cosine >= {self.tolerance.cos:g})"]
        if self.fingerprint_note:
            out.append(self.fingerprint_note)
        for layer, s in self.layers.items():
            out.append(f"  layer {layer}: max abs diff {s['max_abs']:.3g} ({s['rel']:.3g} of max |v|), "
                       f"min cosine {s['min_cos']:.7f}")
        if self.ok:
            out.append(f"OK: all {self.sampled} items within tolerance")
            return out
        out.append(f"FAILED: {len({f['item_key'] for f in self.failed})} item(s) over tolerance:")
        for f in self.failed[:20]:
            out.append(f"  item {f['item_key']} layer {f['layer']}: cosine {f['cos']:.6f}, max abs diff "
                       f"{f['max_abs']:.3g}; stored by {_facts_line(f['provenance'])}")
        out.append(f"  this machine: {_facts_line(self.here)}")
        return out


def _facts_line(f: dict[str, str] | None) -> str:
    if not f:
        return "(no provenance recorded)"
    return (f"{f.get('dtype', '?')} on {f.get('device', '?')}, engine {f.get('engine', '?')}, torch "
            f"{f.get('torch', '?')}, transformers {f.get('transformers', '?')}, embrm {f.get('embrm', '?')}")


def sample_items(store: Store, e: Entry, n: int, seed: int) -> tuple[list[str], dict[str, str]]:
    """``n`` random stored item keys of the entry (sorted, seeded) and key -> provenance id."""
    ids = store.entry_provenance(e.model_hash, e.dataset_hash, ids=True)["ids"]
    if not ids:
        raise EmbrmError(f"entry {e.model_name} x {e.dataset_name} has no stored vectors to verify")
    keys = sorted(ids)
    return sorted(random.Random(seed).sample(keys, min(n, len(keys)))), ids


def stored_items(store: Store, e: Entry, keys: list[str]) -> tuple[list[str], list[str], dict[int, np.ndarray]]:
    """Prompts, responses and stored vectors (layer -> (n, dim) float32) of ``keys``."""
    from embrm.store.lance_store import LanceStore

    want = set(keys)
    texts: dict[str, tuple[str, str]] = {}
    vecs: dict[int, dict[str, np.ndarray]] = {layer: {} for layer in e.layers}
    if isinstance(store, LanceStore):
        import pyarrow as pa
        import pyarrow.compute as pc

        value_set = pa.array(keys, pa.string())
        for b in store.iter_rows(e.dataset_hash, ["item_key", "prompt", "response"], 65536):
            hit = b.filter(pc.is_in(b.column("item_key"), value_set=value_set))
            for r in hit.to_pylist():
                texts.setdefault(r["item_key"], (r["prompt"], r["response"]))
        got = store.read_vectors(e.model_hash, keys)
        out = {layer: got.vectors[layer].astype(np.float32) for layer in e.layers}
    else:  # a service: its Arrow pulls, one per layer
        for layer in e.layers:
            for b in store.iter_entry(e.model_hash, e.dataset_hash, layer, columns=["prompt", "response"],
                                      allow_partial=True):
                for i, k in enumerate(b.rows.column("item_key").to_pylist()):
                    if k in want:
                        vecs[layer][k] = np.asarray(b.vectors[i], np.float32)
                        texts.setdefault(k, (b.rows.column("prompt")[i].as_py(), b.rows.column("response")[i].as_py()))
        out = {layer: np.stack([vecs[layer][k] for k in keys]) for layer in e.layers}
    return [texts[k][0] for k in keys], [texts[k][1] for k in keys], out


def recompute_local(e: Entry, model: str | None, device: str, prompts: list[str], responses: list[str]
                    ) -> tuple[dict[int, np.ndarray], dict[str, str], str]:
    """Vectors of the items computed here with the entry's recorded spec (``model``
    replaces where the weights are), this machine's facts, and a note when the
    fingerprint here differs from the entry's."""
    from embrm.extractor.embedder import Embedder, EmbeddingSpec
    from embrm.extractor.provenance import extraction_facts

    spec = EmbeddingSpec.of_catalog(e.model_config)
    if model is not None:
        spec = replace(spec, model=model)
    emb = Embedder(spec, device)
    out = emb.embed(prompts, responses)
    note = "" if emb.model_hash == e.model_hash else (
        f"note: the model here has fingerprint {emb.model_hash[:12]}, the entry {e.model_hash[:12]} "
        "(other weights or another path to them)")
    return out.vectors, extraction_facts(emb, "verify"), note


def recompute_service(e: Entry, server: str, prompts: list[str], responses: list[str]
                      ) -> tuple[dict[int, np.ndarray], dict[str, str], str]:
    """Vectors of the items from an ``embrm serve`` of the same fingerprint (``POST /v1/embed``)."""
    from embrm.store.service import ServiceStore

    svc = ServiceStore(server)
    info = svc.info()
    if info.get("model_hash") != e.model_hash:
        raise EmbrmError(f"{server} serves model {str(info.get('model_hash'))[:12]}, not the entry's "
                         f"{e.model_hash[:12]}; start it with the entry's model and settings")
    res = svc.http.json("POST", "/v1/embed", {"items": [{"prompt": p, "response": r} for p, r in
                                                        zip(prompts, responses)],
                                              "layers": list(e.layers), "encoding_format": "base64"})
    out = {layer: np.stack([np.frombuffer(base64.b64decode(it["vectors"][str(layer)]), "<f4")
                            for it in res["items"]]) for layer in e.layers}
    here = {"dtype": str(e.model_config.get("dtype", "")), "device": f"service {server}", "engine": "service"}
    return out, here, ""


def compare(stored: dict[int, np.ndarray], fresh: dict[int, np.ndarray], keys: list[str], tol: Tolerance,
            facts_of: dict[str, dict[str, str] | None]) -> tuple[dict[int, dict[str, float]], list[dict[str, Any]]]:
    """Per-layer statistics and the items over tolerance."""
    stats, failed = {}, []
    for layer, s in stored.items():
        f = np.asarray(fresh[layer], np.float64)
        s = np.asarray(s, np.float64)
        diff = np.abs(s - f).max(axis=1)
        scale = max(float(np.abs(s).max()), 1e-12)
        cos = (s * f).sum(1) / np.maximum(np.linalg.norm(s, axis=1) * np.linalg.norm(f, axis=1), 1e-30)
        stats[layer] = {"max_abs": float(diff.max()), "rel": float(diff.max() / scale), "min_cos": float(cos.min())}
        for i in np.flatnonzero((diff / scale > tol.rel) | (cos < tol.cos)):
            failed.append({"item_key": keys[i], "layer": layer, "cos": float(cos[i]), "max_abs": float(diff[i]),
                           "provenance": facts_of.get(keys[i])})
    return stats, failed


def verify(store: Store, model: str, dataset: str, sample: int = 64, model_path: str | None = None,
           server: str | None = None, device: str = "auto", seed: int = 0) -> VerifyReport:
    """Recompute ``sample`` random stored items of the entry and compare (module docstring)."""
    if sample < 1:
        raise EmbrmError("--sample must be at least 1")
    e = store.resolve(model, dataset)
    keys, ids = sample_items(store, e, sample, seed)
    prompts, responses, stored = stored_items(store, e, keys)
    if server is not None:
        fresh, here, note = recompute_service(e, server, prompts, responses)
    else:
        fresh, here, note = recompute_local(e, model_path, device, prompts, responses)
    records = {p["id"]: p["facts"] for p in store.entry_provenance(e.model_hash, e.dataset_hash)["provenance"]}
    facts_of = {k: records.get(ids.get(k, "")) for k in keys}
    tol = tolerance([f for f in facts_of.values() if f] or [{}], here)
    stats, failed = compare(stored, fresh, keys, tol, facts_of)
    return VerifyReport(e.model_name, e.dataset_name, len(keys), stats, tol, failed, here, note)
