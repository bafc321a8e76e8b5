"""The prepared GPU check: extraction and ensemble training on one H100 or H200, in one run.

Run it from anywhere (no install, no network, no store, no GGUF, no hub download)::

    bash benchmarks/gpu/run.sh             # on the GPU machine: full size, about 2-4 minutes
    bash benchmarks/gpu/run.sh --smoke     # the same code on the CPU with tiny shapes, < 1 minute

``run.sh`` puts the working tree's root on ``PYTHONPATH``, sets ``PYTHONUNBUFFERED=1``
and the offline switches, and stops the run with SIGINT after ``GPU_CHECK_TIMEOUT``
seconds (default 420; 150 with ``--smoke``), upon which the results so far are still
printed and written. Other options: ``--budget SECONDS`` (all sections together;
default 330 on the GPU), ``--sections extraction,ensemble`` (a subset; ``models`` is
added where needed), ``--device``, ``--json PATH``, ``--keep`` (keep the model folder).

What it needs on the GPU machine: Python 3.12 with PyTorch (CUDA), transformers,
tokenizers, numpy and pyarrow (imported by ``embrm.store``, which ``Embedder``
imports for the model fingerprint). It imports neither lance/lancedb nor click, scipy or
matplotlib: ``--smoke`` runs with those made unimportable (``sys.modules[name] = None``)
to prove it, and the JSON lists which of them and of safetensors, pandas and pyarrow
were imported (``imported``).

Sections, each with its own time budget, checked between steps; a section that runs
out is cut short and reports what it measured (status ``cut``), one that fails records
its error (status ``error``) and the run goes on:

``models``
    random-weight ``LlamaModel`` in the SmolLM2-135M shape (576 wide, 30 layers, 9/3
    heads, MLP 1536, vocab 49152) and a 1B-class shape (2048 wide, 16 layers, 32/8
    heads, MLP 8192, vocab 32000), built on the GPU, saved with ``save_pretrained``
    beside an in-process word-level tokenizer, pinned with ``resolve_model`` (see
    ``synth.py``).
``roofline``
    one 8192^3 bf16 GEMM: the device's matmul TFLOP/s.
``extraction`` (bf16, per shape, 4096 HH-RLHF-shaped items, mean ~143 tokens)
    embrm (``Embedder.embed_encoded``: length-sorted token-budget batches, default
    budget for the device), the seed's way (batches of 50 in input order padded to
    512) and one item at a time (first 256 items), each warmed up first; tokens/s
    counts real tokens; roofline = GEMM FLOP/s / FLOPs per token (2 x non-embedding
    parameters + attention, as ``bench_extract.py``). Targets: embrm >= 4x the seed's
    way; >= 50% of the roofline on the 1B shape.
``equivalence`` (fp32, TF32 off)
    ``Embedder.embed`` against one forward per item (last token), 64 items per shape.
    Target: max abs diff <= 1e-4 on CUDA.
``ensemble`` (bf16)
    10 members of the seed-size MLP (2048 -> 1024 -> 512 -> 1), batch 1024, 40k pairs,
    5 epochs, no early stopping, trained as one batched ensemble against one after
    another, best of 2, by ``embrm.rm.trainer.train`` on the device.
    Targets: >= 3x, accuracies within 0.01.
``transfer``
    extraction tok/s with embrm's pinned, non-blocking copies against plain (pageable,
    blocking) ones, and against building each batch's row index on the device
    (``torch.tensor(..., device=...)``, a blocking copy embrm used to make).

It prints progress lines, then one table (section, check, value, target, verdict:
PASS / FAIL, ``n.a.`` on the CPU or where the value is missing, ERROR where the
section failed), and writes JSON to ``$OUT/gpu.json`` where ``OUT`` is set, else to
``benchmarks/results/gpu.json`` (``gpu-smoke.json`` with ``--smoke``). The exit status
is 0 unless a section errored (1) or the run was interrupted (2).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ABSENT_ON_GPU = ("lance", "lancedb", "click", "scipy", "matplotlib")  # made unimportable with --smoke
WATCHED = (*ABSENT_ON_GPU, "safetensors", "pandas", "pyarrow")
ORDER = ("models", "roofline", "extraction", "equivalence", "ensemble", "transfer")
BUDGET_GPU = {"models": 60, "roofline": 15, "extraction": 120, "equivalence": 40, "ensemble": 60, "transfer": 40}
BUDGET_SMOKE = {"models": 20, "roofline": 5, "extraction": 30, "equivalence": 15, "ensemble": 20, "transfer": 20}
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU: proves the code, measures nothing")
    ap.add_argument("--device", default=None, help="cuda (default) or cpu (default with --smoke)")
    ap.add_argument("--budget", type=float, default=None, help="seconds for all sections (default 330; smoke 120)")
    ap.add_argument("--sections", default=",".join(ORDER), help=f"comma-separated subset of {','.join(ORDER)}")
    ap.add_argument("--json", default=None, help="output path (default $OUT/gpu.json or benchmarks/results/)")
    ap.add_argument("--workdir", default=None, help="where the models are written (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the model folder")
    ap.add_argument("--block-imports", action=argparse.BooleanOptionalAction, default=None,
                    help=f"make {', '.join(ABSENT_ON_GPU)} unimportable (default: with --smoke)")
    a = ap.parse_args(argv)
    a.device = a.device or ("cpu" if a.smoke else "cuda")
    a.budget = a.budget or (120.0 if a.smoke else 330.0)
    a.block_imports = a.smoke if a.block_imports is None else a.block_imports
    wanted = [s.strip() for s in a.sections.split(",") if s.strip()]
    bad = [s for s in wanted if s not in ORDER]
    if bad:
        ap.error(f"unknown section(s) {bad}; use {','.join(ORDER)}")
    if any(s in wanted for s in ("extraction", "equivalence", "transfer")) and "models" not in wanted:
        wanted.append("models")
    a.sections = [s for s in ORDER if s in wanted]
    return a


def out_path(a: argparse.Namespace) -> Path:
    if a.json:
        return Path(a.json)
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"]) / "gpu.json"
    return ROOT / "benchmarks" / "results" / ("gpu-smoke.json" if a.smoke else "gpu.json")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# ------------------------------------------------------------------- verdicts
def _fmt(v: float | None, spec: str = ",.0f", unit: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{unit}"


def checks(report: dict[str, Any]) -> list[dict[str, str]]:
    """One row per check: the value, the target and PASS / FAIL / n.a. (CPU or no value) / ERROR."""
    on_target = report["device"] == "cuda"
    secs = report["sections"]
    rows: list[dict[str, str]] = []

    def get(section: str, *keys: str) -> Any:
        v: Any = secs.get(section, {}).get("result", {})
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        return v

    def row(section: str, check: str, value: str, target: str = "-", ok: bool | None = None,
            cpu_too: bool = False) -> None:
        status = secs.get(section, {}).get("status")
        if ok is None:
            verdict = "ERROR" if status == "error" and value == "-" else ("n.a." if target != "-" else "")
        elif not on_target and not cpu_too:
            verdict = "n.a."
        else:
            verdict = "PASS" if ok else "FAIL"
        rows.append({"section": section + ("" if status in ("ok", None) else f" ({status})"), "check": check,
                     "value": value, "target": target, "verdict": verdict})

    tf = get("roofline", "tflops")
    row("roofline", f"bf16 GEMM {get('roofline', 'n') or ''}^3", _fmt(tf, ",.1f", " TFLOP/s"))
    for name in report["shapes"]:
        r = get("extraction", name) or {}
        e, s, one = (r.get(k, {}).get("tok_s") for k in ("embrm", "seed", "single"))
        sp = r.get("speedup_vs_seed")
        row("extraction", f"{name} embrm batching", _fmt(e, ",.0f", " tok/s") +
            (f" = {sp:.2f}x seed" if sp else ""), ">= 4x seed", None if sp is None else sp >= 4)
        row("extraction", f"{name} seed's way (bs 50, pad 512)", _fmt(s, ",.0f", " tok/s"))
        row("extraction", f"{name} one at a time", _fmt(one, ",.0f", " tok/s") +
            (f" (embrm {r['speedup_vs_single']:.1f}x)" if r.get("speedup_vs_single") else ""))
        frac = r.get("roofline_fraction")
        big = name == "llama-1b"
        row("extraction", f"{name} embrm / bf16 roofline",
            _fmt(frac, ".1%") + (f" of {r['roofline_tok_s']:,.0f} tok/s" if frac is not None else ""),
            ">= 50%" if big else "-", None if frac is None or not big else frac >= 0.5)
    for name in report["shapes"]:
        d = get("equivalence", name, "max_abs_diff")
        row("equivalence", f"{name} fp32 batched vs single, max abs diff", _fmt(d, ".2e"), "<= 1e-4",
            None if d is None else d <= 1e-4)
    sp, bs, ss = get("ensemble", "speedup"), get("ensemble", "batched_s"), get("ensemble", "sequential_s")
    m = get("ensemble", "members") or 10
    row("ensemble", f"{m} members batched vs one after another",
        _fmt(sp, ".2f", "x") + (f" ({bs:.2f} s vs {ss:.2f} s)" if sp else ""), ">= 3x", None if sp is None else sp >= 3)
    ab, aq = get("ensemble", "acc_batched"), get("ensemble", "acc_sequential")
    row("ensemble", "accuracy batched / sequential", "-" if ab is None else f"{ab:.4f} / {aq:.4f}", "|diff| <= 0.01",
        None if ab is None else abs(ab - aq) <= 0.01)
    for name in report["shapes"]:
        r = get("transfer", name) or {}
        pv, ix = r.get("pinned_vs_plain"), r.get("device_index_vs_embrm")
        a = r.get("embrm: pinned, non-blocking", {}).get("tok_s")
        b = r.get("plain: pageable, blocking", {}).get("tok_s")
        row("transfer", f"{name} pinned+non-blocking vs plain",
            "-" if pv is None else f"{a:,.0f} vs {b:,.0f} tok/s = {pv:.3f}x")
        row("transfer", f"{name} row index made on the device", "-" if ix is None else f"{ix:.3f}x embrm")
    return rows


def table(rows: list[dict[str, str]]) -> str:
    cols = ["section", "check", "value", "target", "verdict"]
    w = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(w[c]) for c in cols).rstrip()]
    lines += ["  ".join(r[c].ljust(w[c]) for c in cols).rstrip() for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    t_start = time.perf_counter()
    for k, v in ENV.items():
        os.environ.setdefault(k, v)
    if a.block_imports:
        for name in ABSENT_ON_GPU:
            if name not in sys.modules:
                sys.modules[name] = None  # type: ignore[assignment]  # import raises, find_spec gives None
    signal.signal(signal.SIGTERM, _interrupt)
    for p in (str(ROOT), str(HERE)):
        if p not in sys.path:
            sys.path.insert(0, p)

    import sections
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device; use --smoke (or --device cpu)", file=sys.stderr)
        return 1
    import transformers

    path = out_path(a)
    report: dict[str, Any] = {
        "mode": "smoke" if a.smoke else "full", "device": a.device, "python": platform.python_version(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
        "machine": platform.machine(), "cpus": os.cpu_count(), "budget_s": a.budget,
        "blocked_imports": list(ABSENT_ON_GPU) if a.block_imports else [], "sections": {}}
    if a.device == "cuda":
        prop = torch.cuda.get_device_properties(0)
        report["gpu"] = {"name": prop.name, "memory_gib": prop.total_memory / 2 ** 30,
                         "multiprocessors": prop.multi_processor_count}
    ctx = sections.make_context(a.device, a.smoke, a.workdir)
    report["shapes"] = {n: s.config() for n, s in ctx.shapes.items()}
    report["params"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(ctx.params).items()}
    budgets = BUDGET_SMOKE if a.smoke else BUDGET_GPU
    deadline = time.perf_counter() + a.budget
    print(f"# embrm GPU check ({report['mode']}) on {report.get('gpu', {}).get('name', a.device)}; "
          f"torch {torch.__version__}, transformers {transformers.__version__}; budget {a.budget:.0f} s", flush=True)
    interrupted = False

    def write() -> None:
        report["wall_s"] = time.perf_counter() - t_start
        report["imported"] = sorted(n for n in WATCHED if sys.modules.get(n) is not None)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, default=float))

    try:
        for name in ORDER:
            if name not in a.sections:
                continue
            entry: dict[str, Any] = {"status": "running", "budget_s": budgets[name], "result": {}}
            report["sections"][name] = entry
            left = deadline - time.perf_counter()
            print(f"[{name}] (budget {min(budgets[name], left):.0f} s)", flush=True)
            t = time.perf_counter()
            try:
                sections.SECTIONS[name](ctx, sections.Guard(min(budgets[name], left)), entry["result"])
                entry["status"] = "ok"
            except sections.loops.Cut as e:
                entry["status"], entry["cut_at"] = "cut", str(e)
                print(f"  cut short: out of time at {e}", flush=True)
            except KeyboardInterrupt:
                entry["status"], entry["cut_at"] = "cut", "interrupted (time limit)"
                raise
            except Exception as e:  # report it and go on with the next section
                entry["status"], entry["error"] = "error", f"{type(e).__name__}: {e}"
                entry["traceback"] = traceback.format_exc(limit=8)
                print(f"  ERROR {entry['error']}\n{entry['traceback']}", flush=True)
            finally:
                entry["seconds"] = time.perf_counter() - t
                sections.free(a.device)
                write()
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: time limit reached; reporting what was measured", flush=True)
    finally:
        for name in a.sections:
            report["sections"].setdefault(name, {"status": "skipped", "result": {}})
        if not a.keep:
            sections.close(ctx)
        else:
            report["workdir"] = str(ctx.workdir)
        report["checks"] = checks(report)
        write()
    print(f"\n# {report.get('gpu', {}).get('name', a.device)}, torch {report['torch']}, "
          f"{report['wall_s']:.0f} s wall ({report['mode']})")
    print(table(report["checks"]))
    print(f"\nJSON: {path}", flush=True)
    if interrupted:
        return 2
    return 1 if any(s["status"] == "error" for s in report["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
