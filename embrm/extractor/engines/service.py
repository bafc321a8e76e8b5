"""The service engine: extraction on an ``embrm serve`` process (``--store http://...``).

The dataset is read, normalised and fingerprinted here with the same readers as a local
extraction (:func:`~embrm.extractor.plan.scan_dataset`), its rows are uploaded, and the
service's dataset job plans and runs them with its own model and store (the same
:func:`~embrm.extractor.plan.plan_extraction` and window loop). This process follows
the job and reports as a local extraction does.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from embrm.errors import EmbrmError

if TYPE_CHECKING:
    from embrm.extractor.config import ExtractConfig
    from embrm.extractor.embedder import EmbeddingSpec
    from embrm.extractor.report import ExtractResult
    from embrm.store.service import ServiceStore

#: Settings of an embedding that the service reports in ``GET /v1/info``.
COMPARED = {"pooling": "pooling", "layers": "layers", "dtype": "dtype", "max_length": "max_length",
            "truncation_side": "truncation_side", "input_format": "input_format"}
FLAGS = {"input_format": "--format", "truncation_side": "--truncation-side", "max_length": "--max-length"}


def check_spec(spec: EmbeddingSpec | None, info: dict[str, Any], url: str) -> None:
    """A spec asked for explicitly must be the served one: the service extracts with its
    own model, so anything else would silently give other vectors."""
    if spec is None:
        return
    diff = []
    for field, key in COMPARED.items():
        want, have = getattr(spec, field), info.get(key)
        if field == "layers":
            want, have = list(want), list(have or [])
        if field == "dtype" and want == "auto":
            continue
        if want != have:
            diff.append(f"{FLAGS.get(field, '--' + field.replace('_', '-'))} {want} (served: {have})")
    if spec.model is not None and spec.model not in (info.get("source"), info.get("model")):
        diff.append(f"--model {spec.model} (served: {info.get('source')})")
    if diff:
        raise EmbrmError(f"{'; '.join(diff)}: the service at {url} extracts with its own model and settings; "
                         "drop these options (GET /v1/info shows what it serves)")


class ServiceEngine:
    """Upload, start the service's job, follow it (see the module docstring)."""

    def __init__(self, poll_seconds: float = 0.5):
        self.poll_seconds = poll_seconds

    def extract(self, cfg: ExtractConfig, store: ServiceStore, on_window: Callable[[int], None] | None = None
                ) -> ExtractResult:
        from embrm.extractor.plan import scan_dataset
        from embrm.extractor.report import ExtractResult, progress_bar

        t0 = time.perf_counter()
        info = store.info()
        check_spec(cfg.embedding, info, store.uri)
        data = scan_dataset(cfg.data)
        store.upload(data.rows(), data.dataset_hash, data.name, data.kind)  # checked against the hash there
        job = store.start_entry(data.dataset_hash, data.name, data.kind, data.source).get("job")
        bar = progress_bar(data.n_rows, "extract (service)", cfg.run.quiet)
        seen = 0
        try:
            while job is not None and job["status"] == "running":
                time.sleep(self.poll_seconds)
                job = store.entry_status(info["model_hash"], data.dataset_hash)["job"] or job
                if bar is not None:
                    bar.update(job["done_rows"] - seen)
                seen = job["done_rows"]
        finally:
            if bar is not None:
                bar.close()
        if job is not None and job["status"] == "failed":
            raise EmbrmError(f"the server's job failed: {job['error']}")
        e = store.resolve(info["model_hash"], data.dataset_hash)
        j = job or {}
        return ExtractResult(e.model_name, e.model_hash, data.name, data.dataset_hash, data.kind, data.n_rows,
                             j.get("computed", 0), j.get("cached", data.n_rows if job is None else 0), data.skipped,
                             j.get("duplicates", 0), e.truncated, j.get("tokens", 0), time.perf_counter() - t0,
                             j.get("compute_seconds", 0.0), bool(j.get("computed")), e.status)
