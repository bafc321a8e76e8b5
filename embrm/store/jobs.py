"""Dataset jobs as records in the store, so that a job outlives the replica running it.

One Lance table, ``jobs``: a row per (job, epoch). A job is an entry being extracted by
a service (its id is the entry id); an **epoch** is one replica's turn at running it.

* **Claiming** a turn inserts the row ``<job id>#<epoch>``. The key field carries Lance's
  primary-key marker, so on object storage two replicas that insert the same epoch at
  once are checked against each other by Lance and exactly one row lands; on local disk
  the insert is checked under the table's ``flock`` (:meth:`Tables.lock`). The replica
  whose row landed owns the job until its **lease** expires.
* **Heartbeats** update the owner's own row in place: progress, state and a new lease
  expiry. They never touch another epoch's row, so a heartbeat and a takeover never
  conflict.
* A job's **current** record is its highest epoch. Any replica reads it to report the
  job; a replica that finds a running job whose lease expired (its owner died) claims
  the next epoch and resumes it from what the store holds.

Lease times are wall-clock seconds (``time.time()``): replicas on different machines need
clocks in step to well under a lease (NTP gives milliseconds).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pyarrow as pa

from embrm.store.tables import Tables, merge, sql_str

TABLE = "jobs"
SCHEMA = pa.schema([
    pa.field("lease_key", pa.string(), nullable=False, metadata={"lance-schema:unenforced-primary-key": "true"}),
    ("job_id", pa.string()), ("epoch", pa.int64()), ("owner", pa.string()),
    ("model_hash", pa.string()), ("dataset_hash", pa.string()), ("dataset_name", pa.string()),
    ("kind", pa.string()), ("source", pa.string()), ("n_rows", pa.int64()),
    ("state", pa.string()), ("done_rows", pa.int64()), ("error", pa.string()),
    ("lease_expires", pa.float64()), ("started_at", pa.float64()), ("updated_at", pa.float64()),
])
RUNNING, RELEASED = "running", "released"  # released: its owner stopped it (SIGTERM); take it over now
ENDED = ("complete", "partial", "failed")


@dataclass(frozen=True)
class JobRecord:
    """One epoch of a job as the store holds it."""

    job_id: str
    epoch: int
    owner: str
    model_hash: str
    dataset_hash: str
    dataset_name: str
    kind: str
    source: dict[str, Any] = field(default_factory=dict)
    n_rows: int = 0
    state: str = RUNNING
    done_rows: int = 0
    error: str | None = None
    lease_expires: float = 0.0
    started_at: float = 0.0
    updated_at: float = 0.0

    @property
    def lease_key(self) -> str:
        return f"{self.job_id}#{self.epoch:08d}"

    def orphaned(self, now: float | None = None) -> bool:
        """Whether another replica should take this job over: released by its owner, or
        running under a lease that expired (its owner died or hangs)."""
        now = time.time() if now is None else now
        return self.state == RELEASED or (self.state == RUNNING and self.lease_expires < now)

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        d["source"] = json.dumps(self.source, sort_keys=True)
        return {"lease_key": self.lease_key, **d}

    @classmethod
    def of_row(cls, r: dict[str, Any]) -> JobRecord:
        r = {k: v for k, v in r.items() if k != "lease_key"}
        r["source"] = json.loads(r["source"] or "{}")
        return cls(**r)

    def next(self, owner: str, lease_seconds: float) -> JobRecord:
        """The record of the next epoch, owned by ``owner``."""
        now = time.time()
        return replace(self, epoch=self.epoch + 1, owner=owner, state=RUNNING, error=None,
                       lease_expires=now + lease_seconds, updated_at=now)


class JobTable:
    """The job records of one store."""

    def __init__(self, tables: Tables):
        self.tables = tables

    def tables_used(self) -> set[str]:
        return {TABLE}

    def _read(self, job_id: str | None = None) -> list[JobRecord]:
        ds = self.tables.open(TABLE)
        if ds is None:
            return []
        filt = None if job_id is None else f"job_id = {sql_str(job_id)}"
        return [JobRecord.of_row(r) for r in ds.to_table(filter=filt).to_pylist()]

    def current(self, job_id: str) -> JobRecord | None:
        """The job's highest epoch, or None if no replica ever ran it."""
        return max(self._read(job_id), key=lambda r: r.epoch, default=None)

    def all(self) -> list[JobRecord]:
        """Every job's current record, newest first."""
        cur: dict[str, JobRecord] = {}
        for r in self._read():
            if r.job_id not in cur or r.epoch > cur[r.job_id].epoch:
                cur[r.job_id] = r
        return sorted(cur.values(), key=lambda r: r.started_at, reverse=True)

    def claim(self, rec: JobRecord) -> bool:
        """Insert ``rec`` as a new epoch; True only for the one replica whose row landed."""
        self.tables.create(TABLE, SCHEMA)
        data = pa.Table.from_pylist([rec.row()], schema=SCHEMA)
        with self.tables.lock(TABLE):
            ds = self.tables.get(TABLE)
            if self.tables.exclusive_commits:  # local disk: alone under the lock, check then insert
                if ds.count_rows(f"lease_key = {sql_str(rec.lease_key)}"):
                    return False
            return merge(ds, "lease_key", data) == 1

    def update(self, rec: JobRecord) -> bool:
        """Write the owner's progress, state and lease into its own epoch's row. False (and
        nothing written) when another replica has claimed a later epoch: the caller lost
        the job and stops it after its window."""
        cur = self.current(rec.job_id)
        if cur is not None and cur.epoch > rec.epoch:
            return False
        data = pa.Table.from_pylist([replace(rec, updated_at=time.time()).row()], schema=SCHEMA)
        with self.tables.lock(TABLE):
            merge(self.tables.get(TABLE), "lease_key", data, update=True)
        return True


__all__ = ["ENDED", "RELEASED", "RUNNING", "JobRecord", "JobTable"]
