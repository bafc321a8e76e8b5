"""Prometheus metrics of one service process (``GET /metrics``)."""
from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """Requests by route and status, cache hits and misses, batch sizes, queue depth,
    tokens and forward-pass time (their ratio is tokens/s), and dataset-job progress."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("embrm_requests", "HTTP requests", ["route", "status"], registry=r)
        self.hits = Counter("embrm_cache_hits", "Items answered from the store or memory", registry=r)
        self.misses = Counter("embrm_cache_misses", "Items that needed a forward pass", registry=r)
        self.batch_items = Histogram("embrm_batch_items", "Items per forward call of the model thread",
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=r)
        self.queue = Gauge("embrm_queue_items", "Items waiting for the model thread", ["priority"], registry=r)
        self.tokens = Counter("embrm_tokens", "Real tokens through the model", registry=r)
        self.forward_seconds = Counter("embrm_forward_seconds", "Seconds in forward passes", registry=r)
        self.committed = Counter("embrm_committed_items", "Vectors the service committed to the store", registry=r)
        self.job_rows = Gauge("embrm_job_rows_done", "Rows a dataset job has gone through", ["entry"], registry=r)
        self.job_total = Gauge("embrm_job_rows_total", "Rows of a dataset job's dataset", ["entry"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, Any]:
        """The numbers of ``/metrics`` as JSON (``GET /v1/stats``, the page's service
        panel): read from the same registry, so the two never disagree."""
        samples = [(s.name, s.labels, s.value) for fam in self.registry.collect() for s in fam.samples]

        def total(name: str) -> float:
            return sum(v for n, _, v in samples if n == name)

        calls, seconds = total("embrm_batch_items_count"), total("embrm_forward_seconds_total")
        return {"hits": total("embrm_cache_hits_total"), "misses": total("embrm_cache_misses_total"),
                "forward_calls": calls,
                "items_per_call": total("embrm_batch_items_sum") / calls if calls else None,
                "queue": {labels["priority"]: v for n, labels, v in samples if n == "embrm_queue_items"},
                "tokens": total("embrm_tokens_total"), "forward_seconds": seconds,
                "tokens_per_second": total("embrm_tokens_total") / seconds if seconds else None,
                "committed": total("embrm_committed_items_total"), "requests": total("embrm_requests_total")}
