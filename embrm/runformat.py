"""What a reward-model run directory holds, checked without torch.

A run is small: ``config.json`` (the training settings, the embedding fingerprint it was
trained on: model hash, layer, dim), the weights (``weights.safetensors`` for the neural
methods, ``lgbm_<i>.txt`` per LightGBM member), ``metrics.json`` and a few plots. The
trainer writes and reads runs (:mod:`embrm.rm.run`); the store publishes them
(:mod:`embrm.store.registry`) and the service accepts them over the network, so the
check of a run's files lives here, below both, and imports neither torch nor the store.

Every byte of a run that crosses the network is hostile until this module has read it:
file names from a fixed pattern, bounded sizes, a config that parses and says what
embrm needs, a safetensors header whose tensors fit the config. Weights are never
pickle.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from embrm import __version__, methods, runcheck
from embrm.errors import EmbrmError
from embrm.printable import printable

RUN_FORMAT = 2  # format 2 added standardisation statistics and logistic regression
READS = (1, 2)
CONFIG, METRICS, WEIGHTS, STATS = "config.json", "metrics.json", "weights.safetensors", "standardize.safetensors"
#: The files a run may hold, and nothing else (no paths, no hidden files).
FILE_NAME = re.compile(r"config\.json|metrics\.json|weights\.safetensors|standardize\.safetensors"
                       r"|lgbm_\d{1,4}\.txt|[a-z0-9][a-z0-9_\-]{0,63}\.png")
MAX_FILE_BYTES = 1 << 30
MAX_JSON_BYTES = 64 << 20


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run directory's ``config.json``, checked (see :func:`check_config`)."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise EmbrmError(f"{run_dir} is not an embrm run directory (no config.json); pass the --out of `embrm train`")
    return check_config(path.read_bytes(), str(run_dir))


def check_config(raw: bytes, where: str) -> dict[str, Any]:
    """Parse a run's config and check every field embrm reads (types and ranges, see
    :mod:`embrm.runcheck`); one line naming the field and what it should be."""
    if len(raw) > MAX_JSON_BYTES:
        raise EmbrmError(f"{where}: config.json is over {MAX_JSON_BYTES >> 20} MB")
    try:
        cfg = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise EmbrmError(f"{where}: config.json is not valid JSON; the run directory is damaged") from None
    if not isinstance(cfg, dict):
        raise EmbrmError(f"{where}: config.json must hold a JSON object")
    fmt = cfg.get("run_format")
    if isinstance(fmt, bool) or fmt not in READS:
        raise EmbrmError(f"{where} was written by embrm {str(cfg.get('embrm_version', '?'))[:20]} in run format "
                         f"{str(fmt)[:20]}; this embrm ({__version__}) reads formats {', '.join(map(str, READS))}: "
                         "retrain, or use a matching embrm")
    runcheck.check_train(cfg.get("train"), where)
    runcheck.check_fields(cfg, where)
    return cfg


def fingerprint(cfg: dict[str, Any]) -> dict[str, Any]:
    """The embedding a run scores: model hash, layer and dim (what a server must serve)."""
    return {"model_hash": cfg.get("model_hash"), "layer": cfg.get("layer"), "dim": cfg["dim"]}


def summary(name: str, cfg: dict[str, Any], metrics: dict[str, Any] | None) -> dict[str, Any]:
    """What a listing shows of a run: name, method, members, dim, the training entry and
    the validation metrics (strict JSON: an undefined metric is null, not NaN)."""
    train = cfg["train"]
    return {"name": name, "method": train["method"], "members": train["ensemble"], **fingerprint(cfg),
            "model_name": cfg.get("model_name"), "dataset_hash": cfg.get("dataset_hash"),
            "dataset_name": cfg.get("dataset_name"), "embrm_version": cfg.get("embrm_version"),
            "metrics": finite(metrics or {})}


def finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinity replaced by None (JSON has neither)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def check_files(files: dict[str, Any], where: str) -> dict[str, Any]:
    """Check a whole run given as ``{file name: bytes}`` (or any buffer); returns its config.

    The one check every reader and publisher of a run uses (:mod:`embrm.runcheck`): the
    config, then exactly the weight files its method implies (:mod:`embrm.runshapes`),
    each against the config, and the standardisation statistics."""
    bad = [n for n in files if not FILE_NAME.fullmatch(n)]
    if bad:
        raise EmbrmError(f"{where}: {printable(bad[0], 80)!r} is not a file a run holds (config.json, metrics.json, "
                         "weights.safetensors, standardize.safetensors, lgbm_<i>.txt, *.png)")
    big = [n for n, b in files.items() if len(b) > MAX_FILE_BYTES]
    if big:
        raise EmbrmError(f"{where}: {big[0]} is over {MAX_FILE_BYTES >> 30} GB")
    if CONFIG not in files:
        raise EmbrmError(f"{where}: a run needs its config.json")
    cfg = check_config(files[CONFIG], where)
    if METRICS in files:
        try:
            json.loads(bytes(files[METRICS]).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise EmbrmError(f"{where}: metrics.json is not valid JSON") from None
    train, dim = cfg["train"], cfg["dim"]
    _check_stats(files, train, dim, where)
    weights = {n for n in files if n == WEIGHTS or n.startswith("lgbm_")}
    # what the method's files hold, from the method object (embrm.methods, the one registry):
    # {file name: the exact shape of every tensor in it (safetensors), or None (LightGBM text)}
    want = methods.get(train["method"]).files(train, dim)
    if weights != set(want):
        name = sorted(set(want) - weights or weights - set(want))[0]
        raise EmbrmError(f"{where}: a {train['method']} run of {train['ensemble']} members holds "
                         f"{', '.join(sorted(want))} and nothing else; {name} is "
                         f"{'missing' if name in want else 'not one of them'}")
    for name in sorted(want):
        if want[name] is None:
            runcheck.check_lgbm(files[name], dim, where, name)
        else:
            runcheck.check_tensors(files[name], want[name], where, name)
    return cfg


def _check_stats(files: dict[str, Any], train: dict[str, Any], dim: int, where: str) -> None:
    """Standardisation statistics where, and only where, the run says it standardised."""
    said = train.get("standardize")
    if said is True and STATS not in files:
        raise EmbrmError(f"{where}: config.json train.standardize is true, and the run has no {STATS}")
    if said is False and STATS in files:
        raise EmbrmError(f"{where}: config.json train.standardize is false, and the run holds {STATS}")
    if STATS in files:
        runcheck.check_stats(files[STATS], dim, where, STATS)


def read_files(run_dir: Path) -> dict[str, bytes]:
    """The files of a run directory that a run holds (see :data:`FILE_NAME`), checked.
    Subdirectories (``eval-*``) and anything else stay behind."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EmbrmError(f"{run_dir} is not an embrm run directory (not a directory); pass the --out of "
                         "`embrm train`")
    files = {p.name: p.read_bytes() for p in sorted(run_dir.iterdir())
             if p.is_file() and not p.is_symlink() and FILE_NAME.fullmatch(p.name)}
    if CONFIG not in files:
        raise EmbrmError(f"{run_dir} is not an embrm run directory (no config.json); pass the --out of `embrm train`")
    check_files(files, str(run_dir))
    return files


def checked_config(run_dir: Path) -> dict[str, Any]:
    """A run directory's config, after the check of every file of the run (not only the
    config): for commands that do expensive work before they load the weights."""
    return check_config(read_files(run_dir)[CONFIG], str(run_dir))
