"""The flow every extraction that plans here shares: the local and Ray engines
(:func:`run_planned`) and the service's dataset jobs (:func:`execute` with the service's
``embed`` and progress):

1. Scan the dataset once: fingerprint, kind, item keys (:mod:`embrm.extractor.plan`).
2. Pin the model and build its fingerprint (:class:`~embrm.extractor.embedder.Embedder`),
   and plan: the distinct item keys the store lacks.
3. If any item is missing, open the engine's session: load the weights (or start Ray)
   now, so that a bad model, tokenizer, layer or cluster address fails before anything
   is written. If nothing is missing, the model is never loaded.
4. Register the plan (the dataset's rows table and a catalog entry) and run it.
5. Finish the entry: count what is stored, set the status, compact.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from embrm.extractor.plan import ExtractionPlan, plan_extraction, scan_dataset
from embrm.extractor.report import ExtractResult, LoopCounts

if TYPE_CHECKING:
    from embrm.extractor.config import ExtractConfig
    from embrm.extractor.embedder import Embedder
    from embrm.store.base import Store


class Engine(Protocol):
    """An engine that plans here: how it pins the model, what it starts, how it runs a plan."""

    def embedder(self, cfg: ExtractConfig) -> Embedder:
        """The (unloaded) Embedder whose fingerprint this engine computes under."""

    def session(self, embedder: Embedder) -> contextlib.AbstractContextManager[None]:
        """What must be up before anything is written (model weights, a Ray cluster)."""

    def run(self, plan: ExtractionPlan, store: Store, embedder: Embedder, cfg: ExtractConfig,
            on_window: Callable[[int], None] | None) -> LoopCounts:
        """Compute and commit the plan's missing items."""


def run_planned(engine: Engine, cfg: ExtractConfig, store: Store,
                on_window: Callable[[int], None] | None = None) -> ExtractResult:
    """Steps 1-5 of the module docstring, for ``embrm extract``."""
    t0 = time.perf_counter()
    data = scan_dataset(cfg.data)
    embedder = engine.embedder(cfg)
    return execute(plan_extraction(data, embedder, store), store,
                   lambda p: engine.run(p, store, embedder, cfg, on_window), lambda: engine.session(embedder), t0)


def execute(plan: ExtractionPlan, store: Store, run: Callable[[ExtractionPlan], LoopCounts],
            session: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
            t0: float | None = None) -> ExtractResult:
    """Steps 3-5: open ``session`` if anything is missing, register, ``run``, finish.

    ``run`` computes and commits the plan's missing items (an engine's loop, or the
    service's window loop with its model thread's ``embed``); registering twice is
    harmless (the rows table and the entry are written only once), so a caller that
    must show the entry before the run starts (a service job) may register first."""
    t0 = time.perf_counter() if t0 is None else t0
    if not plan.n_missing:
        plan.register(store)
        return finish(plan, store, LoopCounts(cached=plan.data.n_rows), False, t0)
    with session():
        plan.register(store)
        counts = run(plan)
    return finish(plan, store, counts, True, t0)


def finish(plan: ExtractionPlan, store: Store, counts: LoopCounts, model_loaded: bool,
           t0: float) -> ExtractResult:
    """Step 5, and the result every engine reports."""
    d = plan.data
    entry = store.finish_entry(plan.model_hash, d.dataset_hash)
    return ExtractResult(plan.model_name, plan.model_hash, d.name, d.dataset_hash, d.kind, d.n_rows, counts.computed,
                         counts.cached, d.skipped, counts.duplicates, entry.truncated, counts.tokens,
                         time.perf_counter() - t0, counts.compute_seconds, model_loaded, entry.status)
