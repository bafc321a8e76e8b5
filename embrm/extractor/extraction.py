"""``extract()``: one vector per (prompt, response) of a dataset, into a store, once.

The engine is chosen from the store and ``engine`` (:func:`embrm.extractor.engines.engine_for`):
the local and Ray engines plan here and run the plan
(:mod:`embrm.extractor.engines.planned`); a store that is a service plans and runs on the
service's machine, with the dataset scanned and uploaded from here
(:mod:`embrm.extractor.engines.service`).

A crash loses at most one window (one commit); re-running the same command continues.
Memory stays flat in the dataset size apart from the item keys (32 bytes a row).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from embrm.extractor.config import ExtractConfig, RunOptions
from embrm.extractor.engines import engine_for
from embrm.extractor.report import ExtractResult, progress_bar

if TYPE_CHECKING:
    from embrm.store.base import Store


def extract(cfg: ExtractConfig, store: Store | None = None, on_window: Callable[[int], None] | None = None,
            engine: str = "local", ray: Any = None) -> ExtractResult:
    """Extract one vector per (prompt, response) of ``cfg.data`` into the store.

    Vectors already stored under this model fingerprint are reused, from any dataset;
    if every item is cached the model weights are never loaded. ``engine`` is ``local``
    or ``ray`` (with ``ray``, its :class:`~embrm.extractor.engines.ray.RayOptions`); a
    service store extracts on the service. ``on_window`` (for tests) is called after
    each committed window with the number of rows written.
    """
    from embrm.store.backends import open_store

    cfg.validate()
    store = store or open_store(cfg.run.store, create=True)
    return engine_for(store, engine, ray).extract(cfg, store, on_window)


__all__ = ["ExtractConfig", "ExtractResult", "RunOptions", "extract", "progress_bar"]
