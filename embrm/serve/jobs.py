"""Dataset jobs: ``POST /v1/entries`` extracts an uploaded dataset in the background.

A job runs through the same function as ``embrm extract``
(:func:`~embrm.extractor.engines.planned.execute`: plan, register, run, finish) with the
same window loop (:func:`~embrm.extractor.engines.local.run_local`): windows of the rows
table, missing items embedded, one commit per window, resumable by asking again. Only
two things differ. The ``embed`` callable: items go through the service's model thread
at job priority, so they share the model, single flight and batching with online
requests, which go first. And the progress: a :class:`Job` (all of a job's state, one
small object) takes the loop's progress-bar calls and the counts.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from embrm.errors import EmbrmError
from embrm.extractor.embedder import Embedded
from embrm.extractor.engines.local import run_local
from embrm.extractor.engines.planned import execute
from embrm.extractor.plan import ExtractionPlan, plan_extraction, stored_scan
from embrm.serve.worker import JOB
from embrm.store import item_key
from embrm.store import schema as S

if TYPE_CHECKING:
    from embrm.extractor.embedder import Embedder
    from embrm.extractor.report import ExtractResult
    from embrm.serve.cache import ServiceCache
    from embrm.serve.metrics import Metrics
    from embrm.serve.settings import Settings
    from embrm.serve.worker import ModelWorker
    from embrm.store.base import Store

log = logging.getLogger("embrm.serve")


@dataclass
class Job:
    """A dataset job's state, as ``GET /v1/entries/{model}/{dataset}`` and ``GET /v1/jobs`` report it."""

    model_hash: str
    dataset_hash: str
    dataset_name: str
    rows: int
    status: str = "running"  # running | complete | partial | failed | stopped
    done_rows: int = 0
    computed: int = 0
    cached: int = 0
    duplicates: int = 0
    tokens: int = 0
    compute_seconds: float = 0.0
    error: str | None = None
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    seconds: float = 0.0
    lost: bool = False  # another replica took the job over (embrm.serve.leases): stop after this window

    def update(self, n: int) -> None:  # the loop's progress bar
        self.done_rows += n

    def set_postfix(self, cached: int | None = None, **_: Any) -> None:
        if cached is not None:  # live, for GET /v1/jobs; the final counts replace it
            self.cached = cached

    def finished(self, r: ExtractResult, stopped: bool) -> None:
        """The extraction's result: its counts replace the live ones."""
        self.computed, self.cached, self.duplicates = r.computed, r.cached, r.duplicates
        self.tokens, self.compute_seconds = r.tokens, r.compute_seconds
        self.done_rows = max(self.done_rows, r.computed + r.cached + r.duplicates)
        self.status = "stopped" if stopped and r.status != "complete" else r.status

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        del d["lost"]
        d["tokens_per_second"] = self.tokens / self.compute_seconds if self.compute_seconds else None
        return d


class Jobs:
    """Runs and remembers the dataset jobs of one service process."""

    def __init__(self, store: Store, embedder: Embedder, worker: ModelWorker, cache: ServiceCache,
                 metrics: Metrics, settings: Settings):
        self.store, self.embedder, self.worker, self.cache, self.metrics = store, embedder, worker, cache, metrics
        self.window = settings.window
        self._jobs: dict[str, Job] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def get(self, model_hash: str, dataset_hash: str) -> Job | None:
        with self._lock:
            return self._jobs.get(S.entry_id(model_hash, dataset_hash))

    def list(self) -> list[Job]:
        """Every job this process ran or runs: running ones first, then the newest."""
        with self._lock:
            jobs = list(self._jobs.values())
        jobs.sort(key=lambda j: j.started_at, reverse=True)
        return sorted(jobs, key=lambda j: j.status != "running")

    def running(self, model_hash: str | None = None, dataset_hash: str | None = None) -> bool:
        """Whether any job (or that entry's job) is running."""
        with self._lock:
            return any(j.status == "running" and (model_hash is None or (j.model_hash, j.dataset_hash) ==
                                                  (model_hash, dataset_hash)) for j in self._jobs.values())

    @contextlib.contextmanager
    def held(self) -> Iterator[list[Job]]:
        """No job starts meanwhile; yields the jobs running now (``gc`` runs in here when
        there are none)."""
        with self._lock:
            yield [j for j in self._jobs.values() if j.status == "running"]

    def start(self, dataset_hash: str, name: str, kind: str, source: dict[str, Any]) -> Job:
        """Start (or return the running) job of a dataset whose rows are in the store."""
        if kind not in S.KINDS:
            raise EmbrmError(f"kind {kind!r} is unknown; use one of {', '.join(S.KINDS)}")
        if not self.store.has_rows(dataset_hash):
            raise EmbrmError(f"dataset {dataset_hash[:12]} has no rows here; upload it with PUT /v1/datasets first")
        eid = S.entry_id(self.embedder.model_hash, dataset_hash)
        with self._lock:
            job = self._jobs.get(eid)
            if job is not None and job.status == "running":
                return job
            scan = stored_scan(self.store, dataset_hash, name, kind, source)
            job = Job(self.embedder.model_hash, dataset_hash, name, scan.n_rows)
            plan = plan_extraction(scan, self.embedder, self.store)
            plan.register(self.store)  # the entry exists (partial) before this call returns
            self._jobs[eid] = job
            t = threading.Thread(target=self._run, args=(job, plan), name=f"embrm-job-{dataset_hash[:8]}",
                                 daemon=True)
            self._threads[eid] = t
        t.start()
        return job

    def _embed(self, prompts: list[str], responses: list[str]) -> Embedded:
        keys = [item_key(p, r) for p, r in zip(prompts, responses)]
        futures = self.worker.submit(list(zip(keys, prompts, responses)), JOB, known=self.cache.memory)
        results = [f.result() for f in futures]
        layers = list(results[0].vectors)
        n_tok = np.array([r.n_tokens for r in results])
        return Embedded({layer: np.stack([r.vectors[layer] for r in results]) for layer in layers}, n_tok,
                        np.array([r.truncated for r in results]),
                        int(np.minimum(n_tok, self.embedder.spec.max_length).sum()))

    def _run(self, job: Job, plan: ExtractionPlan) -> None:
        t0 = time.perf_counter()
        eid = S.entry_id(job.model_hash, job.dataset_hash)
        try:
            self.metrics.job_total.labels(eid[:40]).set(job.rows)

            def window_done(n: int) -> None:
                job.computed, job.seconds = job.computed + n, time.perf_counter() - t0
                self.metrics.job_rows.labels(eid[:40]).set(job.done_rows)

            def embed(prompts: list[str], responses: list[str]) -> Embedded:
                t = time.perf_counter()  # tokens/s while the job runs (the loop's counts come at its end)
                out = self._embed(prompts, responses)
                job.tokens, job.compute_seconds = job.tokens + out.tokens, job.compute_seconds + time.perf_counter() - t
                return out

            from embrm.extractor.provenance import extraction_facts

            facts = extraction_facts(self.embedder, "service")
            result = execute(plan, self.store, lambda p: run_local(p, self.store, embed, self.window,
                                                                   on_window=window_done, progress=job,
                                                                   should_stop=self._stop.is_set, provenance=facts),
                             t0=t0)
            job.finished(result, self._stop.is_set() or job.lost)
        except Exception as e:
            log.exception("dataset job %s failed", job.dataset_hash[:12])
            job.status, job.error = "failed", str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        finally:
            job.seconds = time.perf_counter() - t0
            self.metrics.job_rows.labels(eid[:40]).set(job.done_rows)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop every job after its current window (the next start resumes it)."""
        self._stop.set()
        for t in list(self._threads.values()):
            t.join(timeout)
