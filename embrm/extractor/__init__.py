"""Run a transformers model over (prompt, response) pairs and store pooled vectors.

Names are imported lazily, so that importing :mod:`embrm.extractor` (as the CLI does)
costs no torch or transformers import; they load with the first use that needs them.
"""
from __future__ import annotations

from embrm.lazy import lazy_exports

_NAMES = {
    "Columns": "embrm.extractor.shapes",
    "DatasetSpec": "embrm.extractor.datasets",
    "iter_rows": "embrm.extractor.datasets",
    "Embedder": "embrm.extractor.embedder",
    "EmbeddingSpec": "embrm.extractor.embedder",
    "Embedded": "embrm.extractor.embedder",
    "ExtractConfig": "embrm.extractor.config",
    "ExtractResult": "embrm.extractor.report",
    "RunOptions": "embrm.extractor.config",
    "extract": "embrm.extractor.extraction",
    "ExtractionPlan": "embrm.extractor.plan",
    "plan_extraction": "embrm.extractor.plan",
    "scan_dataset": "embrm.extractor.plan",
}

__getattr__ = lazy_exports(__name__, _NAMES)


__all__ = sorted(_NAMES)
