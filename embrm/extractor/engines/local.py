"""The in-process engine: the plan's rows in windows, missing items embedded, one commit
per window.

The rows table is read back from the store in windows of ``window`` rows. In each
window, the rows whose item the plan found missing and that this run has not computed
yet are embedded (through any ``embed`` callable: :class:`LocalEngine` passes an
:class:`~embrm.extractor.embedder.Embedder`'s, the service's dataset jobs their model
thread's) and committed as one store write. A crash loses at most one window; a re-run
plans again and continues.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embrm.extractor.engines.planned import run_planned
from embrm.extractor.provenance import extraction_facts
from embrm.extractor.report import LoopCounts, progress_bar
from embrm.extractor.sharing import CoreShare, WindowClaims
from embrm.store.vectors import build_vector_table

if TYPE_CHECKING:
    from embrm.extractor.config import ExtractConfig
    from embrm.extractor.embedder import Embedded, Embedder
    from embrm.extractor.plan import ExtractionPlan
    from embrm.extractor.report import ExtractResult
    from embrm.store.base import Store
    from embrm.store.vectors import VectorInfo

EmbedFn = Callable[[list[str], list[str]], "Embedded"]


class LocalEngine:
    """Forward passes in this process, one Embedder, one commit per window; sharing the
    windows and the cores with other extractions on this machine."""

    cores: CoreShare

    def extract(self, cfg: ExtractConfig, store: Store, on_window: Callable[[int], None] | None = None
                ) -> ExtractResult:
        store.check_engine("local", "extraction")
        return run_planned(self, cfg, store, on_window)

    def embedder(self, cfg: ExtractConfig) -> Embedder:
        from embrm.extractor.embedder import Embedder

        return Embedder(cfg.spec, cfg.run.device, cfg.run.batch_tokens)

    @contextlib.contextmanager
    def session(self, embedder: Embedder) -> Iterator[None]:
        import torch

        embedder.load()  # a bad model, tokenizer or layer fails before anything is written
        with CoreShare(cores=torch.get_num_threads()) as self.cores:  # at most what torch was given
            yield

    def run(self, plan: ExtractionPlan, store: Store, embedder: Embedder, cfg: ExtractConfig,
            on_window: Callable[[int], None] | None) -> LoopCounts:
        import torch

        def share_cores() -> None:  # other extractions may have started or ended meanwhile
            n = self.cores.threads()
            if n != torch.get_num_threads():
                torch.set_num_threads(n)

        bar = progress_bar(plan.data.n_rows, "extract", cfg.run.quiet)
        claims = WindowClaims(store.uri, plan.model_hash, plan.data.dataset_hash)
        try:
            return run_local(plan, store, embedder.embed, cfg.run.window, on_window, bar, claims=claims,
                             before_window=share_cores, provenance=extraction_facts(embedder, "local"))
        finally:
            if bar is not None:
                bar.close()


def run_local(plan: ExtractionPlan, store: Store, embed: EmbedFn, window: int = 1024,
              on_window: Callable[[int], None] | None = None, progress: Any = None,
              should_stop: Callable[[], bool] | None = None, claims: WindowClaims | None = None,
              before_window: Callable[[], None] | None = None, provenance: dict[str, str] | None = None
              ) -> LoopCounts:
    """Compute every missing item of a registered plan; returns the counts.

    Before a window is computed its keys are checked against the store again, so items
    another process committed meanwhile are skipped (and counted as cached). With
    ``claims``, a window another process on this machine is computing is put off until
    the end (see :mod:`embrm.extractor.sharing`). ``on_window`` is called after each
    commit with the rows written; ``progress`` is a tqdm-like bar (``update``,
    ``set_postfix``); ``should_stop`` ends the loop early between windows (the
    service's shutdown); ``before_window`` runs before each window is computed;
    ``provenance`` is how the vectors are computed (:mod:`embrm.extractor.provenance`),
    recorded with every commit.
    """
    loop = _WindowLoop(plan, store, embed, on_window, progress, before_window, provenance)
    dh, cols = plan.data.dataset_hash, ["item_key", "prompt", "response"]
    deferred: list[tuple[int, int]] = []  # (first row, rows) of windows another process held
    start = 0
    for batch in store.iter_rows(dh, cols, window):
        if should_stop is not None and should_stop():
            return loop.counts
        first, start = start, start + len(batch)
        if claims is None:
            loop.process(batch)
            continue
        with claims.claim(first, wait=False) as held:
            if held:
                loop.process(batch)
            else:
                deferred.append((first, len(batch)))
    for first, n in deferred:
        if should_stop is not None and should_stop():
            break
        assert claims is not None
        with claims.claim(first, wait=True):
            loop.process(pa.Table.from_batches(list(store.iter_rows(dh, cols, n, first, n))).combine_chunks()
                         .to_batches()[0])
    return loop.counts


class _WindowLoop:
    """One window at a time: which of its rows are missing items not yet computed (the
    rest count as cached or duplicates), a last check against the store, then ``embed``
    and one commit."""

    def __init__(self, plan: ExtractionPlan, store: Store, embed: EmbedFn, on_window: Callable[[int], None] | None,
                 progress: Any, before_window: Callable[[], None] | None, provenance: Any = None):
        self.store, self.embed, self.model_hash, self.provenance = store, embed, plan.model_hash, provenance
        self.on_window, self.progress, self.before_window = on_window, progress, before_window
        self.counts = LoopCounts()
        self.missing = plan.missing
        self.done = np.zeros(len(plan.missing), bool)  # one byte per missing item, not a set of strings
        self.expect: VectorInfo | None = None

    def todo(self, keys: pa.Array) -> dict[int, int]:
        """{index into missing: row of the window} of the items this window computes."""
        at = pc.fill_null(pc.index_in(keys, value_set=self.missing), -1).to_numpy() if len(self.missing) else \
            np.full(len(keys), -1)
        todo: dict[int, int] = {}
        for row, m in enumerate(at.tolist()):
            if m < 0:
                self.counts.cached += 1
            elif self.done[m] or m in todo:
                self.counts.duplicates += 1
            else:
                todo[m] = row
        if todo:  # committed by another process since the plan was made?
            lacking = self.store.missing_keys(self.model_hash, keys.take(pa.array(list(todo.values()))))
            if len(lacking) < len(todo):
                still = set(lacking.to_pylist())
                for m in [m for m, row in todo.items() if keys[row].as_py() not in still]:
                    del todo[m]
                    self.done[m] = True
                    self.counts.cached += 1
        return todo

    def process(self, batch: pa.RecordBatch) -> None:
        keys, counts = batch.column("item_key"), self.counts
        todo = self.todo(keys)
        if todo:
            if self.before_window is not None:
                self.before_window()
            sel = pa.array(list(todo.values()))
            prompts = batch.column("prompt").take(sel).to_pylist()
            responses = batch.column("response").take(sel).to_pylist()
            t = time.perf_counter()
            out = self.embed(prompts, responses)
            counts.compute_seconds += time.perf_counter() - t
            if self.expect is None:
                self.expect = self.store.vector_info(self.model_hash)
            data = build_vector_table(keys.take(sel), out.vectors, out.n_tokens, out.truncated, expect=self.expect,
                                      provenance=self.provenance)
            self.store.commit_vectors(self.model_hash, data)
            self.done[list(todo)] = True
            counts.computed += len(todo)
            counts.tokens += out.tokens
            if self.on_window:
                self.on_window(len(todo))
        if self.progress is not None:
            self.progress.update(len(keys))
            self.progress.set_postfix(tok_s=f"{counts.tokens_per_second:,.0f}" if counts.compute_seconds else "-",
                                      cached=counts.cached, refresh=False)
