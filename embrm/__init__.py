"""embrm: run an LLM once over (prompt, response) pairs, keep the embeddings, and do
reward-model research on them on a CPU.

The public API is re-exported lazily so that ``import embrm`` stays cheap (no torch).
"""
from __future__ import annotations

__version__ = "0.1.0"

from embrm.errors import EmbrmError
from embrm.lazy import lazy_exports

_LAZY = {
    "open_store": "embrm.store",
    "Store": "embrm.store",
    "extract": "embrm.extractor",
    "ExtractConfig": "embrm.extractor",
}
__getattr__ = lazy_exports(__name__, _LAZY)

__all__ = ["EmbrmError", "__version__", *_LAZY]
