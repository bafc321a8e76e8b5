"""The provenance facts of an extraction in this process: software versions, device name,
the dtype the weights really are in, the engine, the time (what
:mod:`embrm.store.provenance` stores beside each vector)."""
from __future__ import annotations

import platform
import re
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embrm.extractor.embedder import Embedder

ENGINES = ("local", "ray", "service")


@lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (or the platform's processor string)."""
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        if m:
            return m.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: str) -> str:
    """``cpu: <CPU model>``, ``cuda: <GPU name>`` or the device itself."""
    if device == "cuda":
        import torch

        return f"cuda: {torch.cuda.get_device_name()}"
    if device == "cpu":
        return f"cpu: {cpu_name()}"
    return device


def this_machine(device: str, dtype: str, engine: str) -> dict[str, str]:
    """The facts of a computation in this process on ``device`` in ``dtype``."""
    import torch
    import transformers

    from embrm import __version__

    return {"torch": torch.__version__, "transformers": transformers.__version__, "embrm": __version__,
            "device": device_name(device), "dtype": dtype, "engine": engine,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def extraction_facts(embedder: Embedder, engine: str) -> dict[str, str]:
    """The facts of ``embedder``'s forward passes: the dtype is read from the loaded
    weights, not from the spec, so a model that came out in another dtype says so."""
    model = embedder.load()._model
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return this_machine(embedder.device, dtype, engine)
