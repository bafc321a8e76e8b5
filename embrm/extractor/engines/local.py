"""The in-process engine: the plan's rows in windows, missing items embedded, one commit
per window.

The rows table is read back from the store in windows of ``window`` rows. In each
window, the rows whose item the plan found missing and that this run has not computed
yet are embedded (through any ``embed`` callable: the CLI passes an
:class:`~embrm.extractor.embedder.Embedder`'s, the service its batcher's) and committed
as one store write. A crash loses at most one window; a re-run plans again and continues.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embrm.store.vectors import build_vector_table

if TYPE_CHECKING:
    from embrm.extractor.embedder import Embedded
    from embrm.extractor.plan import ExtractionPlan
    from embrm.store.store import Store

EmbedFn = Callable[[list[str], list[str]], "Embedded"]


@dataclass
class LoopCounts:
    """What one run of the loop did."""

    computed: int = 0
    cached: int = 0  # rows whose item was stored before this run
    duplicates: int = 0  # rows whose item appeared earlier in this dataset (computed once)
    tokens: int = 0
    compute_seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.compute_seconds if self.compute_seconds else 0.0


def run_local(plan: ExtractionPlan, store: Store, embed: EmbedFn, window: int = 1024,
              on_window: Callable[[int], None] | None = None, progress: Any = None,
              should_stop: Callable[[], bool] | None = None) -> LoopCounts:
    """Compute every missing item of a registered plan; returns the counts.

    ``on_window`` is called after each commit with the rows written; ``progress`` is a
    tqdm-like bar (``update``, ``set_postfix``); ``should_stop`` ends the loop early
    between windows (the service's shutdown).
    """
    counts = LoopCounts()
    missing = plan.missing
    done = np.zeros(len(missing), bool)  # one byte per missing item, not a set of strings
    expect = None
    for batch in store.iter_dataset_rows(plan.data.dataset_hash, ["item_key", "prompt", "response"], window):
        if should_stop is not None and should_stop():
            break
        keys = batch.column("item_key")
        at = pc.fill_null(pc.index_in(keys, value_set=missing), -1).to_numpy() if len(missing) else \
            np.full(len(keys), -1)
        todo: dict[int, int] = {}  # index into missing -> row of this batch
        for row, m in enumerate(at.tolist()):
            if m < 0:
                counts.cached += 1
            elif done[m] or m in todo:
                counts.duplicates += 1
            else:
                todo[m] = row
        if todo:
            sel = pa.array(list(todo.values()))
            prompts = batch.column("prompt").take(sel).to_pylist()
            responses = batch.column("response").take(sel).to_pylist()
            t = time.perf_counter()
            out = embed(prompts, responses)
            counts.compute_seconds += time.perf_counter() - t
            if expect is None:
                expect = store.vector_info(plan.model_hash)
            data = build_vector_table(keys.take(sel), out.vectors, out.n_tokens, out.truncated, expect=expect)
            store.commit_vectors(plan.model_hash, data)
            done[list(todo)] = True
            counts.computed += len(todo)
            counts.tokens += out.tokens
            if on_window:
                on_window(len(todo))
        if progress is not None:
            progress.update(len(keys))
            progress.set_postfix(tok_s=f"{counts.tokens_per_second:,.0f}" if counts.compute_seconds else "-",
                                 cached=counts.cached, refresh=False)
    return counts
