"""Lazy re-exports: a package names its public API without importing it.

``import embrm`` and ``import embrm.extractor`` must stay cheap (the CLI lists commands
without torch, and ``embrm store ls`` never loads transformers), yet users expect
``from embrm.extractor import Embedder`` to work. A package calls :func:`lazy_exports`
with ``{name: module}`` and assigns the result to its ``__getattr__``; each name is
imported on first use (PEP 562).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``names[attr]`` and returns its ``attr``."""

    def __getattr__(attr: str) -> Any:
        module = names.get(attr)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {attr!r}")
        return getattr(importlib.import_module(module), attr)

    return __getattr__
