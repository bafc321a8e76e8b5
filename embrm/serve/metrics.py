"""Prometheus metrics of one service process (``GET /metrics``)."""
from __future__ import annotations

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
