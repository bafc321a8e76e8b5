"""Every setting of ``embrm serve``, with its default, in one place.

The command's options take their defaults from :class:`Settings` (so ``--help`` and the
code agree), the tests build services from it, and every part of the service reads the
one object it was given. None of these change a vector: what does is the model's
:class:`~embrm.extractor.embedder.EmbeddingSpec`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class Settings:
    # where to listen
    host: str = "127.0.0.1"
    port: int = 8000
    # limits: what one request may ask for (413 beyond), how much may wait (429 beyond)
    max_body_bytes: int = 32 << 20
    max_upload_bytes: int = 1 << 30
    max_items: int = 2048
    max_queue: int = 65536
    # batching and commits
    max_wait_ms: float = 5.0  # how long the model thread waits for concurrent requests to batch together
    max_batch_items: int = 1024  # items one online forward call may take
    commit_items: int = 1024  # computed online items are committed every this many...
    commit_seconds: float = 2.0  # ...or this often
    window: int = 1024  # rows per commit of a dataset job
    hot_bytes: int = 256 << 20  # recently used vectors kept in memory
    max_page_entries: int = 1000  # entries one page of GET /v1/entries may hold (the page asks for less)
    # slow clients: a request's headers must arrive within header_timeout; its body may
    # pause at most body_idle_timeout between pieces and take body_timeout in all
    header_timeout: float = 10.0
    body_idle_timeout: float = 30.0
    body_timeout: float = 600.0
    log_level: str = "warning"
    # replicas on one store (docs/replicas.md): what another replica committed is seen
    # here within commit_seconds (its commit) plus refresh_seconds (our look)
    refresh_seconds: float = 2.0  # how often this replica looks for published reward models and orphaned jobs
    lease_seconds: float = 15.0  # a dataset job's lease; its owner renews it every third of this
    replica_id: str = ""  # this replica's name in job records (default: host-pid)

    def with_(self, **kw: Any) -> Settings:
        """A copy with some settings changed (None values keep the default)."""
        return replace(self, **{k: v for k, v in kw.items() if v is not None})

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


DEFAULTS = Settings()
