"""Run a transformers model over (prompt, response) pairs and store pooled vectors.

Names are imported lazily, so that importing :mod:`embrm.extractor` (as the CLI does)
costs no torch or transformers import; they load with the first use that needs them.
"""
from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "Columns": "embrm.extractor.datasets",
    "DatasetSpec": "embrm.extractor.datasets",
    "iter_rows": "embrm.extractor.datasets",
    "Embedder": "embrm.extractor.embedder",
    "EmbeddingSpec": "embrm.extractor.embedder",
    "Embedded": "embrm.extractor.embedder",
    "ExtractConfig": "embrm.extractor.extraction",
    "ExtractResult": "embrm.extractor.extraction",
    "RunOptions": "embrm.extractor.extraction",
    "extract": "embrm.extractor.extraction",
    "ExtractionPlan": "embrm.extractor.plan",
    "plan_extraction": "embrm.extractor.plan",
    "scan_dataset": "embrm.extractor.plan",
}


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'embrm.extractor' has no attribute {name!r}")


__all__ = sorted(_NAMES)
