"""``extract()``: plan a dataset against a model, then run the plan on an engine.

1. Scan the dataset once: fingerprint, kind, item keys (:mod:`embrm.extractor.plan`).
2. Pin the model and build its fingerprint (:class:`~embrm.extractor.embedder.Embedder`).
   If any item lacks a vector, load the weights now, so that a bad model, tokenizer or
   layer fails before anything is written.
3. Register the plan: the dataset's rows table and a catalog entry.
4. Run it: in this process (:mod:`embrm.extractor.engines.local`) or on Ray
   (:mod:`embrm.extractor.engines.ray`). If nothing is missing, the model is never loaded.
5. Finish the entry: count what is stored, set the status, compact.

A crash loses at most one window (one commit); re-running the same command continues.
Memory stays flat in the dataset size apart from the item keys (32 bytes a row).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from embrm.errors import EmbrmError
from embrm.extractor.datasets import DatasetSpec
from embrm.extractor.embedder import Embedder, EmbeddingSpec
from embrm.extractor.plan import ExtractionPlan, plan_extraction, scan_dataset
from embrm.store.keys import short
from embrm.store.store import Store, open_store


@dataclass(frozen=True)
class RunOptions:
    """How to run an extraction; nothing here changes a vector."""

    device: str = "auto"
    batch_tokens: int | None = None  # None: 2048 padded tokens on CPU, 32768 on GPUs
    window: int = 1024  # rows per store commit: a crash loses at most one
    store: str | None = None  # None: $EMBRM_STORE or ./embrm-store
    quiet: bool = False

    def validate(self) -> None:
        if self.window < 1:
            raise EmbrmError("--window must be positive")
        if self.batch_tokens is not None and self.batch_tokens < 1:
            raise EmbrmError("--batch-tokens must be positive")


@dataclass
class ExtractConfig:
    """An extraction: which data, which embedding, how to run."""

    data: DatasetSpec
    embedding: EmbeddingSpec = field(default_factory=EmbeddingSpec)
    run: RunOptions = field(default_factory=RunOptions)

    def validate(self) -> None:
        self.data.validate()
        self.embedding.validate()
        self.run.validate()


@dataclass
class ExtractResult:
    model_name: str
    model_hash: str
    dataset_name: str
    dataset_hash: str
    kind: str
    rows: int
    computed: int
    cached: int
    skipped: int  # bad records skipped with skip_bad_rows
    duplicates: int  # rows whose item appeared earlier in this dataset (computed once)
    truncated: int
    tokens: int
    seconds: float
    compute_seconds: float
    model_loaded: bool
    status: str

    def report(self) -> str:
        tps = self.tokens / self.compute_seconds if self.compute_seconds else 0.0
        return "\n".join([
            f"model    {self.model_name}  [{short(self.model_hash)}]",
            f"dataset  {self.dataset_name}  [{short(self.dataset_hash)}]  ({self.kind}, {self.rows} rows)",
            f"computed {self.computed}   cached {self.cached}   duplicates {self.duplicates}   "
            f"truncated {self.truncated}   skipped {self.skipped}   status {self.status}",
            f"time     {self.seconds:.1f} s" + (f"   {tps:,.0f} tok/s in forward passes" if self.model_loaded
                                                else "   (all cached: model not loaded)"),
        ])


def prepare(cfg: ExtractConfig, store: Store | None = None, embedder: Embedder | None = None,
            load: bool = True) -> tuple[Embedder, ExtractionPlan, Store]:
    """Steps 1-3: scan, fingerprint, load the model if anything is missing, register.

    An engine whose workers hold the model passes its own (unloaded) ``embedder`` for
    the fingerprint and ``load=False``.
    """
    cfg.validate()
    data = scan_dataset(cfg.data)
    embedder = embedder or Embedder(cfg.embedding, cfg.run.device, cfg.run.batch_tokens)
    store = store or open_store(cfg.run.store, create=True)
    plan = plan_extraction(data, embedder, store)
    if plan.n_missing and load:
        embedder.load()  # a bad model, tokenizer or layer fails before anything is written
    plan.register(store)
    return embedder, plan, store


def extract(cfg: ExtractConfig, store: Store | None = None,
            on_window: Callable[[int], None] | None = None) -> ExtractResult:
    """Extract one vector per (prompt, response) of ``cfg.data`` into the store.

    Vectors already stored under this model fingerprint are reused, from any dataset;
    if every item is cached the model weights are never loaded. ``on_window`` (for
    tests) is called after each committed window with the number of rows written.
    """
    from embrm.extractor.engines.local import run_local

    t0 = time.perf_counter()
    embedder, plan, store = prepare(cfg, store)
    bar = progress_bar(plan.data.n_rows, "extract", cfg.run.quiet)
    try:
        counts = run_local(plan, store, embedder.embed, cfg.run.window, on_window, bar)
    finally:
        if bar is not None:
            bar.close()
    return finish(plan, store, counts.computed, counts.cached, counts.duplicates, counts.tokens,
                  counts.compute_seconds, embedder.loaded, t0)


def finish(plan: ExtractionPlan, store: Store, computed: int, cached: int, duplicates: int, tokens: int,
           compute_seconds: float, model_loaded: bool, t0: float) -> ExtractResult:
    """Step 5, and the result every engine reports."""
    d = plan.data
    entry = store.finish_entry(plan.model_hash, d.dataset_hash)
    return ExtractResult(plan.model_name, plan.model_hash, d.name, d.dataset_hash, d.kind, d.n_rows, computed,
                         cached, d.skipped, duplicates, entry.truncated, tokens, time.perf_counter() - t0,
                         compute_seconds, model_loaded, entry.status)


def progress_bar(total: int, desc: str, quiet: bool, unit: str = "row") -> Any:
    """A tqdm bar, or None when quiet."""
    if quiet:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True)
