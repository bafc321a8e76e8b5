"""What the CPU can do, read without importing anything heavy.

Both the extractor and the reward-model trainer choose bf16 by default only where the
CPU multiplies bf16 natively. This lives in its own module so that training on numpy
arrays does not pay for importing transformers or LanceDB (seconds on a small machine).
"""
from __future__ import annotations

import os
import re
from pathlib import Path


def cpu_has_fast_bf16() -> bool:
    """True where the CPU has native bf16 matmul (AMX or AVX512-BF16) and torch may use it.

    ``ATEN_CPU_CAPABILITY`` set to ``avx2`` (or lower) restricts torch's kernels to that
    instruction set, as on an AVX2-only machine: bf16 is then emulated, so the answer is
    no. This is also how the benchmarks stand in for such a machine on a newer CPU.
    """
    if os.environ.get("ATEN_CPU_CAPABILITY", "").lower() in ("default", "avx", "avx2", "zvector"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(amx_bf16|avx512_bf16)\b", flags))


def resolve_device(device: str) -> str:
    """``auto``: CUDA where torch sees it, else MPS, else the CPU; a device asked for and
    absent is an error. One rule for whatever runs in this process: extraction,
    generation, annotation and training (torch is imported only when called). Ray
    workers run elsewhere and take their device from ``--gpus-per-worker``."""
    import torch

    from embrm.errors import EmbrmError

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise EmbrmError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    if device not in ("cpu", "cuda", "mps"):
        raise EmbrmError(f"unknown device {device!r}; use auto, cpu, cuda or mps")
    return device
