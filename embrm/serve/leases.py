"""Dataset jobs across replicas: a lease, a heartbeat and takeover around :class:`~embrm.serve.jobs.Jobs`.

:class:`~embrm.serve.jobs.Jobs` runs a job in this process; this layer makes the job the
store's, so that any replica of a service reports it and another one finishes it when
its replica dies (the records and their claims are :mod:`embrm.store.jobs`):

* starting a job **claims** it in the store (one epoch per turn; of replicas claiming at
  once, exactly one wins) and runs it here; a job another live replica runs is reported,
  not started twice;
* a thread **heartbeats** every job held here every third of a lease, writing its
  progress and a new lease expiry; a heartbeat that finds a later epoch means another
  replica took the job over: this one stops it after its window;
* the same thread **looks for orphans** every ``refresh_seconds``: a running job of this
  model whose lease expired, or one released by a replica that was stopped (SIGTERM),
  is claimed and resumed from what the store holds: the plan skips stored items, and
  vector commits keep one row per key, so a takeover loses and duplicates nothing;
* at shutdown this replica's jobs stop after their window and are **released**, for
  another replica to take over at its next look.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from embrm.store import schema as S
from embrm.store.jobs import ENDED, RELEASED, RUNNING, JobRecord

if TYPE_CHECKING:
    from embrm.serve.jobs import Job, Jobs
    from embrm.serve.settings import Settings
    from embrm.store.lance_store import LanceStore

log = logging.getLogger("embrm.serve")


def replica_name(given: str = "") -> str:
    """This replica's name in job records: ``--replica-id``, else host and process id."""
    return given or f"{socket.gethostname()}-{os.getpid()}"


class JobLeases:
    """This replica's share of the store's dataset jobs (see the module docstring)."""

    def __init__(self, store: LanceStore, jobs: Jobs, model_hash: str, settings: Settings):
        self.store, self.jobs, self.model_hash = store, jobs, model_hash
        self.owner = replica_name(settings.replica_id)
        self.lease, self.refresh = settings.lease_seconds, settings.refresh_seconds
        self._mine: dict[str, JobRecord] = {}  # job id -> the epoch this replica holds
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="embrm-leases", daemon=True)
        self.takeovers = 0

    # ------------------------------------------------------------ starting
    def start(self, dataset_hash: str, name: str, kind: str, source: dict[str, Any]) -> dict[str, Any]:
        """Start (or report) the served model's job on a dataset whose rows are stored."""
        jid = S.entry_id(self.model_hash, dataset_hash)
        with self._lock:
            local = self.jobs.get(self.model_hash, dataset_hash)
            if local is not None and local.status == "running" and jid in self._mine:
                return self._local_dict(local, self._mine[jid])
            cur = self.store.job(jid)
            if cur is not None and cur.state == RUNNING and not cur.orphaned() and cur.owner != self.owner:
                return record_dict(cur)  # a live replica runs it
            now = time.time()
            rec = cur.next(self.owner, self.lease) if cur is not None else JobRecord(
                jid, 0, self.owner, self.model_hash, dataset_hash, name, kind, dict(source),
                lease_expires=now + self.lease, started_at=now, updated_at=now)
            rec = replace(rec, dataset_name=name, kind=kind, source=dict(source))
            if not self.store.claim_job(rec):
                got = self.store.job(jid)
                return record_dict(got) if got is not None else {"job_id": jid, "status": "unknown"}
            return self._local_dict(self._run(rec), rec)

    def _run(self, rec: JobRecord) -> Job:
        """Run a claimed job here; a job that cannot even start is recorded as failed."""
        self._mine[rec.job_id] = rec
        try:
            job = self.jobs.start(rec.dataset_hash, rec.dataset_name, rec.kind, rec.source)
        except Exception as e:
            del self._mine[rec.job_id]
            self.store.update_job(replace(rec, state="failed", error=str(e).splitlines()[0][:300]))
            raise
        self._mine[rec.job_id] = replace(rec, n_rows=job.rows)
        return job

    # ------------------------------------------------------------ reports
    def report(self) -> list[dict[str, Any]]:
        """Every job of the store (any replica's), running ones first; jobs this replica
        ran last with their live counts, others as of their owner's last heartbeat."""
        out = {r.job_id: self._merged(r) for r in self.store.jobs()}
        with self._lock:
            for jid, rec in self._mine.items():
                job = self.jobs.get(rec.model_hash, rec.dataset_hash)
                if job is not None:
                    out[jid] = self._local_dict(job, rec)
        return sorted(out.values(), key=lambda d: d["status"] != "running")

    def one(self, model_hash: str, dataset_hash: str) -> dict[str, Any] | None:
        jid = S.entry_id(model_hash, dataset_hash)
        with self._lock:
            rec, job = self._mine.get(jid), self.jobs.get(model_hash, dataset_hash)
        if rec is not None and job is not None:
            return self._local_dict(job, rec)
        cur = self.store.job(jid)
        if cur is not None:
            return self._merged(cur)
        return job.as_dict() if job is not None else None

    def _merged(self, r: JobRecord) -> dict[str, Any]:
        """A stored record; with this process's counts when it ran that epoch here."""
        job = self.jobs.get(r.model_hash, r.dataset_hash)
        if job is not None and r.owner == self.owner and job.status != "running":
            return self._local_dict(job, r)
        return record_dict(r)

    def _local_dict(self, job: Job, rec: JobRecord) -> dict[str, Any]:
        return {**job.as_dict(), "job_id": rec.job_id, "owner": rec.owner, "epoch": rec.epoch,
                "lease_expires": rec.lease_expires}

    # ---------------------------------------------------- heartbeat, takeover
    def begin(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        beat, last_look = min(self.lease / 3, self.refresh), 0.0
        while not self._stop.wait(beat if self._mine else min(beat, 0.2)):
            try:
                self.heartbeat()
                if time.monotonic() - last_look >= self.refresh:
                    last_look = time.monotonic()
                    self.take_over()
            except Exception:  # the store is slow or away: try again at the next beat
                log.exception("job heartbeat failed; retrying")

    def heartbeat(self, release: bool = False) -> None:
        """Write every held job's progress and renew its lease; let go of ended jobs (and,
        with ``release``, of stopped ones, for another replica to take over)."""
        with self._lock:
            held = list(self._mine.items())
        for jid, rec in held:
            job = self.jobs.get(rec.model_hash, rec.dataset_hash)
            if job is None:
                continue
            state = RUNNING if job.status == "running" else job.status if job.status in ENDED else RELEASED
            if state == RELEASED and not release and job.status == "stopped" and not job.lost:
                continue  # stopping at shutdown: released once its window is committed
            rec = replace(rec, state=state, done_rows=job.done_rows, error=job.error,
                          lease_expires=0.0 if state == RELEASED else time.time() + self.lease)
            ok = self.store.update_job(rec)
            with self._lock:
                if not ok:  # another replica took it over: stop after this window
                    job.lost = True
                    log.warning("dataset job %s was taken over by another replica; stopping it here", jid[:20])
                if not ok or state != RUNNING:
                    self._mine.pop(jid, None)
                else:
                    self._mine[jid] = rec

    def take_over(self) -> list[str]:
        """Claim and resume this model's orphaned jobs; returns their ids."""
        taken = []
        for cur in self.store.jobs():
            if cur.model_hash != self.model_hash or not cur.orphaned() or self._stop.is_set():
                continue
            with self._lock:
                local = self.jobs.get(cur.model_hash, cur.dataset_hash)
                if cur.job_id in self._mine or (local is not None and local.status == "running"):
                    continue
                rec = cur.next(self.owner, self.lease)
                if not self.store.claim_job(rec):
                    continue
                log.warning("taking over dataset job %s from %s (epoch %d)", cur.job_id[:20], cur.owner, rec.epoch)
                try:
                    self._run(rec)
                except Exception:
                    log.exception("resuming dataset job %s failed", cur.job_id[:20])
                    continue
                self.takeovers += 1
                taken.append(cur.job_id)
        return taken

    def stop(self) -> None:
        """Shutdown: no more takeovers; jobs stop after their window; held jobs are released."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        self.jobs.stop()
        try:
            self.heartbeat(release=True)
        except Exception:
            log.exception("releasing dataset jobs failed; their leases expire instead")


def record_dict(r: JobRecord) -> dict[str, Any]:
    """A stored job record in the shape of :meth:`Job.as_dict`, plus its owner and lease."""
    status = "running" if r.state == RUNNING and not r.orphaned() else \
        "orphaned" if r.state in (RUNNING, RELEASED) else r.state
    return {"job_id": r.job_id, "model_hash": r.model_hash, "dataset_hash": r.dataset_hash,
            "dataset_name": r.dataset_name, "rows": r.n_rows, "status": status, "done_rows": r.done_rows,
            "error": r.error, "owner": r.owner, "epoch": r.epoch, "lease_expires": r.lease_expires,
            "started_at": r.started_at}


__all__ = ["JobLeases", "record_dict", "replica_name"]
