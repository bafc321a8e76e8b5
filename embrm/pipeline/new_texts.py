"""Reward models on new texts, in one command: embed what is missing, then score.

``embrm score RUN --dataset FILE`` and ``embrm rerank RUN --dataset FILE`` embed the
dataset exactly as the run's training data was embedded (the run records the embedding's
configuration; the fingerprint must come out the same), through the same extraction as
``embrm extract`` (in this process, or on the service when the store is one, where the
service's model must be the run's), and then score the stored entry.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from embrm.errors import EmbrmError
from embrm.extractor.config import ExtractConfig, RunOptions
from embrm.extractor.datasets import DatasetSpec
from embrm.extractor.embedder import EmbeddingSpec
from embrm.extractor.extraction import extract
from embrm.paths import output_file
from embrm.runformat import checked_config
from embrm.store.base import Store


def run_embedding(cfg: dict[str, Any], store: Store) -> EmbeddingSpec:
    """The embedding a run was trained on: recorded in its config (or, for a run written
    before that, in the catalog entry it was trained on)."""
    model_config = cfg.get("embedding")
    if model_config is None:
        model_config = store.resolve(cfg["model_hash"], cfg["dataset_hash"]).model_config
    return EmbeddingSpec.of_catalog(model_config)


def embed_for_run(run_dir: Path, data: DatasetSpec, store: Store, run: RunOptions) -> tuple[dict[str, Any], str]:
    """Extract ``data`` under the run's embedding into ``store``; (run config, dataset hash)."""
    cfg = checked_config(run_dir)  # the whole run checked before anything is embedded
    spec = run_embedding(cfg, store)
    res = extract(ExtractConfig(data, spec, run), store=store)
    if res.model_hash != cfg["model_hash"]:
        raise EmbrmError(f"the run was trained on embeddings [{cfg['model_hash'][:12]}], but its model resolves to "
                         f"[{res.model_hash[:12]}] here (other weight files?); embed the texts where it was trained")
    if res.status != "complete":
        raise EmbrmError(f"the extraction of {res.dataset_name} is {res.status}; run the command again to finish it")
    return cfg, res.dataset_hash


def score_texts(run_dir: Path, data: DatasetSpec, store: Store, out: Path, run: RunOptions,
                force: bool = False) -> Path:
    """Embed ``data`` as the run needs it, score every row, write Parquet (texts, the
    aggregated rewards and every member's score)."""
    from embrm.rm.experiment import score_from_store

    output_file(out, force, "the scores")
    _, dh = embed_for_run(run_dir, data, store, run)
    return score_from_store(run_dir, store, dh, out, force=True, texts=True)


def rerank_texts(run_dir: Path, data: DatasetSpec, store: Store, out: Path, run: RunOptions,
                 aggregation: str = "mean", coef: float = 1.0, force: bool = False) -> dict[str, Any]:
    """Best-of-N: the best response of each prompt under the run's ``aggregation``,
    written as JSON lines ``{prompt, response, reward, index, candidates}``."""
    from embrm.rm.metrics import aggregate
    from embrm.rm.run import load_run

    output_file(out, force, "the picks")
    cfg, dh = embed_for_run(run_dir, data, store, run)
    model, _ = load_run(run_dir)
    picks: dict[int, tuple[float, int, str, str]] = {}
    counts: dict[int, int] = {}
    for b in store.iter_entry(cfg["model_hash"], dh, layer=cfg.get("layer"),
                              columns=["item_key", "prompt_id", "response_index", "prompt", "response"]):
        reward = aggregate(model.score(b.vectors), aggregation, coef)
        pid, idx = b.rows.column("prompt_id").to_numpy(), b.rows.column("response_index").to_numpy()
        prompts, responses = b.rows.column("prompt"), b.rows.column("response")
        for i in np.argsort(-reward, kind="stable"):
            p = int(pid[i])
            counts[p] = counts.get(p, 0) + 1
            if p not in picks or reward[i] > picks[p][0]:
                picks[p] = (float(reward[i]), int(idx[i]), prompts[int(i)].as_py(), responses[int(i)].as_py())

    def lines() -> Iterator[str]:
        for p in sorted(picks):
            r, idx, prompt, response = picks[p]
            yield json.dumps({"prompt": prompt, "response": response, "reward": r, "index": idx,
                              "candidates": counts[p], "aggregation": aggregation}, ensure_ascii=False) + "\n"

    tmp = Path(out).with_name(Path(out).name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(lines())
    tmp.replace(out)
    return {"prompts": len(picks), "items": sum(counts.values()), "out": str(out)}
