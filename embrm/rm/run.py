"""Run directories: ``config.json``, safetensors weights, ``metrics.json`` and plots.

Weights are never pickled: MLP ensembles are safetensors, LightGBM boosters their own
text format. ``config.json`` carries a run-format number so a later embrm can refuse a
directory it cannot read instead of misreading it.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from embrm import __version__, runformat
from embrm.errors import EmbrmError
from embrm.rm.models import EnsembleMLP
from embrm.rm.trainer import RewardModel, TrainConfig, TrainLog, config_dict

RUN_FORMAT = 1  # what this trainer writes and loads; runformat.READS is what a store or service accepts
WEIGHTS = runformat.WEIGHTS


def save_run(out: Path, model: RewardModel, extra: dict[str, Any]) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = {"run_format": RUN_FORMAT, "embrm_version": __version__, "dim": model.dim,
           "train": config_dict(model.config),
           "log": asdict(model.log), **extra}
    if model.net is not None:
        save_file({k: v.contiguous().cpu() for k, v in model.net.state().items()}, str(out / WEIGHTS))
    else:
        assert model.boosters is not None
        for i, b in enumerate(model.boosters):
            (out / f"lgbm_{i}.txt").write_text(b.model_to_string())
    (out / runformat.CONFIG).write_text(json.dumps(cfg, indent=2))
    return out


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run's ``config.json``, checked by :func:`embrm.runformat.read_config` (the check the
    store and the service make), and of a format this trainer loads."""
    cfg = runformat.read_config(run_dir)
    fmt = cfg["run_format"]
    if fmt > RUN_FORMAT:
        raise EmbrmError(f"{run_dir} was written by embrm {cfg.get('embrm_version', '?')} in run format {fmt}; "
                         f"this embrm ({__version__}) loads run format {RUN_FORMAT}: retrain, or use a matching embrm")
    return cfg


def load_run(run_dir: Path) -> tuple[RewardModel, dict[str, Any]]:
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    t = dict(cfg["train"])
    t["hidden"] = tuple(t["hidden"])
    tc = TrainConfig(**t)
    log = TrainLog(**cfg.get("log", {}))
    if tc.method == "lgbm":
        try:
            import lightgbm as lgb
        except ImportError:
            raise EmbrmError("this run is a LightGBM model: `pip install lightgbm` to load it") from None
        boosters = [lgb.Booster(model_str=(run_dir / f"lgbm_{i}.txt").read_text()) for i in range(tc.ensemble)]
        return RewardModel(tc, cfg["dim"], boosters=boosters, log=log), cfg
    state = load_file(str(run_dir / WEIGHTS))
    hidden = () if tc.method == "linear" else tc.hidden
    net = EnsembleMLP(tc.ensemble, cfg["dim"], hidden, bias=tc.method != "linear")
    net.load_state(state)
    net.eval()
    return RewardModel(tc, cfg["dim"], net=net, log=log), cfg


def write_json(path: Path, obj: Any) -> None:
    def default(o: Any) -> Any:
        if isinstance(o, (np.floating, np.integer)):
            return o.item()
        if isinstance(o, (np.ndarray, torch.Tensor)):
            return o.tolist()
        raise TypeError(type(o).__name__)

    Path(path).write_text(json.dumps(obj, indent=2, default=default, allow_nan=True))
