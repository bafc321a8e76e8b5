"""The prepared GPU check (benchmarks/gpu) cannot rot while no GPU is at hand: its smoke
run is the same code on the CPU with tiny shapes."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "benchmarks" / "gpu"
SECTIONS = ("models", "roofline", "extraction", "equivalence", "ensemble", "transfer")
ABSENT_ON_GPU = {"lance", "lancedb", "click", "scipy", "matplotlib"}


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"gpu_bench_{name}", GPU / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _numbers(obj) -> list[float]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)] if math.isfinite(obj) else []
    if isinstance(obj, dict):
        return [v for x in obj.values() for v in _numbers(x)]
    if isinstance(obj, list):
        return [v for x in obj for v in _numbers(x)]
    return []


@pytest.mark.slow
def test_smoke_run_reports_every_section(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    p = subprocess.run(["bash", str(GPU / "run.sh"), "--smoke"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=180)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["mode"] == "smoke" and report["device"] == "cpu"
    for name in SECTIONS:
        s = report["sections"][name]
        assert s["status"] in ("ok", "cut"), (name, s.get("error"), s.get("traceback"))
        assert _numbers(s["result"]), f"section {name} reported no numbers"
    secs = {name: report["sections"][name]["result"] for name in SECTIONS
            if report["sections"][name]["status"] == "ok"}  # a section cut short on a slow machine has less
    for shape in report["shapes"]:
        if "extraction" in secs:
            for method in ("embrm", "seed", "single"):
                assert secs["extraction"][shape][method]["tok_s"] > 0
        if "equivalence" in secs:
            assert secs["equivalence"][shape]["max_abs_diff"] < 1e-4  # fp32 on the CPU too
        if "transfer" in secs:
            assert secs["transfer"][shape]["pinned_vs_plain"] > 0
    ens = report["sections"]["ensemble"]["result"]
    if "ensemble" in secs:
        assert ens["speedup"] > 0 and 0 <= ens["acc_batched"] <= 1
    assert not ABSENT_ON_GPU & set(report["imported"])  # embrm's import chain works without them
    assert {c["verdict"] for c in report["checks"]} <= {"", "n.a.", "PASS"}
    assert "verdict" in p.stdout and "members batched vs one after another" in p.stdout  # the table was printed


def test_the_trainer_takes_embeddings_already_on_its_device():
    """The GPU check hands ``train`` a tensor on the device; on the CPU that must give what
    numpy input gives, result for result."""
    import torch

    from embrm.rm.trainer import TrainConfig, train

    synth = _module("synth")
    x, tr, va = synth.reward_data(24, 400, 120, seed=3)
    cfg = TrainConfig(ensemble=3, hidden=(8,), batch_size=32, max_epochs=3, patience=9, bf16=True, seed=2,
                      device="cpu")
    a, b = train(x, tr, va, cfg), train(torch.from_numpy(x), tr, va, cfg)
    assert a.log.val_loss == b.log.val_loss and np.array_equal(a.score(x), b.score(x))
