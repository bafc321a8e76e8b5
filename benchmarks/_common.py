"""What every benchmark script shares: the machine it ran on, a table, a JSON file.

Machines differ from session to session (an AMX Xeon, an AVX2-only EPYC), so each
result carries the CPU model and its bf16 flags, and scripts quote ratios measured side
by side in one run, never absolute times alone.
"""
from __future__ import annotations

import json
import os
import platform
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """CPU model, core count, the ISA flags that decide matmul speed, torch version."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        info = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
        model = m.group(1).strip() if m else model
        m = re.search(r"^flags\s*:\s*(.+)$", info, re.M)
        flags = set(m.group(1).split()) if m else set()
    except OSError:
        pass
    out: dict[str, Any] = {
        "cpu": model, "cores": os.cpu_count(),
        "isa": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx_vnni"}),
        "fast_bf16": bool(flags & {"avx512_bf16", "amx_bf16"}),
    }
    emulated = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
                if k in os.environ}
    if emulated:
        out["isa_limited_by"] = emulated
    try:
        import torch

        out["torch"] = torch.__version__
        out["threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return out


def machine_line(m: dict[str, Any] | None = None) -> str:
    m = m or machine()
    bf16 = "native bf16" if m["fast_bf16"] else "no native bf16"
    extra = f"; ISA limited by {m['isa_limited_by']}" if m.get("isa_limited_by") else ""
    return f"# {m['cpu']}, {m['cores']} cores, {', '.join(m['isa']) or 'no AVX2'} ({bf16}){extra}"


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, floatfmt: str = "{:.3f}") -> str:
    """A plain-text table: text left-aligned, numbers right-aligned."""
    if not rows:
        return "(no rows)"
    cols = list(columns or rows[0].keys())

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return floatfmt.format(v)
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    numeric = [all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in rows) for c in cols]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]

    def line(vals: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric)).rstrip()

    return "\n".join([line(cols), *(line(r) for r in cells)])


def write_json(name_or_path: str | Path, payload: dict[str, Any]) -> Path:
    """Write results with the machine they came from; a bare name goes to benchmarks/results/."""
    path = Path(name_or_path)
    if path.parent == Path("."):
        path = RESULTS / path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=float))
    return path


def best_of(fn: Callable[[], Any], repeat: int = 3) -> float:
    """Best wall time of ``repeat`` calls: the least disturbed by the rest of the machine."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def gemm_flops(m: int, k: int, n: int, dtype: Any, reps: int = 10, warmup: int = 2) -> float:
    """FLOP/s of an (m, k) x (k, n) matmul in torch ``dtype`` on the CPU (imports torch
    only when called, so store benchmarks stay light)."""
    import torch

    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(warmup):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * m * k * n * reps / (time.perf_counter() - t)
