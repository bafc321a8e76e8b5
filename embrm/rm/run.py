"""Run directories: ``config.json``, safetensors weights, ``metrics.json`` and plots.

Weights are never pickled: MLP ensembles are safetensors, LightGBM boosters their own
text format, standardisation statistics safetensors beside them (``standardize.safetensors``).
``config.json`` carries a run-format number so a later embrm can refuse a directory it
cannot read instead of misreading it. What the files are called, the format numbers and
the checks of a run's files live in :mod:`embrm.runformat` (no torch), which the store's
registry and the service share.

Format 2 added standardisation and logistic regression; format-1 directories (no
statistics file) still load and score their inputs unchanged. An embrm that reads only
format 1 refuses a format-2 directory instead of scoring it unstandardised.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load, save_file

from embrm import __version__
from embrm import methods as registry
from embrm.rm.standardize import Standardizer
from embrm.rm.trainer import RewardModel, TrainConfig, TrainLog, config_dict
from embrm.runformat import CONFIG, RUN_FORMAT, STATS, check_config, read_config, read_files

__all__ = ["load_run", "read_config", "save_run", "write_json"]


def save_run(out: Path, model: RewardModel, extra: dict[str, Any]) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = {"run_format": RUN_FORMAT, "embrm_version": __version__, "dim": model.dim,
           "train": config_dict(model.config),
           "log": asdict(model.log), **extra}
    registry.get(model.config.method).save(model, out)
    if model.standardizer is not None:
        save_file(model.standardizer.tensors(), str(out / STATS))
    else:
        (out / STATS).unlink(missing_ok=True)  # a rerun into the same directory must not inherit old statistics
    (out / CONFIG).write_text(json.dumps(cfg, indent=2))
    return out


def load_run(run_dir: Path) -> tuple[RewardModel, dict[str, Any]]:
    """A run directory as a model, after the one check of every file
    (:func:`embrm.runformat.read_files`): the weights are loaded from the checked bytes,
    with exactly the shapes the config implies."""
    run_dir = Path(run_dir)
    files = read_files(run_dir)  # every file checked
    cfg = check_config(files[CONFIG], str(run_dir))
    t = dict(cfg["train"])
    t["hidden"] = tuple(t.get("hidden", TrainConfig.hidden))
    tc = TrainConfig(**t)
    log = TrainLog(**cfg.get("log", {}))
    std = Standardizer.from_tensors(load(files[STATS])) if STATS in files else None
    return registry.get(tc.method).load(files, tc, cfg["dim"], log, std, str(run_dir)), cfg


def write_json(path: Path, obj: Any) -> None:
    def default(o: Any) -> Any:
        if isinstance(o, (np.floating, np.integer)):
            return o.item()
        if isinstance(o, (np.ndarray, torch.Tensor)):
            return o.tolist()
        raise TypeError(type(o).__name__)

    Path(path).write_text(json.dumps(obj, indent=2, default=default, allow_nan=True))
