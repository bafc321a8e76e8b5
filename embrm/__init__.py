"""embrm: run an LLM once over (prompt, response) pairs, keep the embeddings, and do
reward-model research on them on a CPU.

The public API is re-exported lazily so that ``import embrm`` stays cheap (no torch).
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from embrm.errors import EmbrmError

_LAZY = {
    "open_store": "embrm.store",
    "Store": "embrm.store",
    "extract": "embrm.extractor",
    "ExtractConfig": "embrm.extractor",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'embrm' has no attribute {name!r}")


__all__ = ["EmbrmError", "__version__", *_LAZY]
