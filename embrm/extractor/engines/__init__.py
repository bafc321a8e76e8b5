"""How an extraction runs: in this process (:mod:`.local`), on Ray Data actors
(:mod:`.ray`), or on an ``embrm serve`` process (:mod:`.service`). The first two plan
here with :func:`~embrm.extractor.engines.planned.run_planned`; the service plans the same
way on its machine. Which one runs is decided here, once, by asking the store which
engines may extract into it (:meth:`~embrm.store.base.Store.extraction_engines`) and by
the engine asked for.
"""
from __future__ import annotations

from typing import Any

from embrm.errors import EmbrmError
from embrm.store.base import Store

ENGINES = ("local", "ray")


def engine_for(store: Store, name: str = "local", ray: Any = None) -> Any:
    """The engine of an extraction into ``store``: a service store computes on the service."""
    if name not in ENGINES:
        raise EmbrmError(f"unknown engine {name!r}; use {' or '.join(ENGINES)}")
    engines = store.extraction_engines()
    if "service" in engines:
        if name != "local":
            raise EmbrmError(f"--engine {name} computes in this process's cluster, but {store.uri} is a service, "
                             "which extracts with its own model: drop --engine, or pass a local or object store")
        from embrm.extractor.engines.service import ServiceEngine

        return ServiceEngine()
    store.check_engine(name, f"extraction with --engine {name}")
    if name == "ray":
        from embrm.extractor.engines.ray import RayEngine, RayOptions

        return RayEngine(ray or RayOptions())
    from embrm.extractor.engines.local import LocalEngine

    return LocalEngine()
