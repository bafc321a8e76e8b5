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
import struct
from pathlib import Path
from typing import Any

from embrm import __version__, methods
from embrm.errors import EmbrmError

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
    """Parse a run's config and check what embrm relies on; one line naming the problem."""
    if len(raw) > MAX_JSON_BYTES:
        raise EmbrmError(f"{where}: config.json is over {MAX_JSON_BYTES >> 20} MB")
    try:
        cfg = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise EmbrmError(f"{where}: config.json is not valid JSON; the run directory is damaged") from None
    if not isinstance(cfg, dict):
        raise EmbrmError(f"{where}: config.json must hold a JSON object")
    fmt = cfg.get("run_format")
    if fmt not in READS:
        raise EmbrmError(f"{where} was written by embrm {cfg.get('embrm_version', '?')} in run format {fmt}; "
                         f"this embrm ({__version__}) reads formats {', '.join(map(str, READS))}: retrain, or use a "
                         "matching embrm")
    train = cfg.get("train")
    if not isinstance(train, dict) or not isinstance(train.get("method"), str) or \
            not isinstance(train.get("ensemble"), int) or train["ensemble"] < 1:
        raise EmbrmError(f"{where}: config.json has no valid train.method and train.ensemble")
    if not isinstance(cfg.get("dim"), int) or cfg["dim"] < 1:
        raise EmbrmError(f"{where}: config.json has no valid dim")
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


def check_files(files: dict[str, bytes], where: str) -> dict[str, Any]:
    """Check a whole run given as ``{file name: bytes}``; returns its config."""
    bad = [n for n in files if not FILE_NAME.fullmatch(n)]
    if bad:
        raise EmbrmError(f"{where}: {bad[0][:80]!r} is not a file a run holds (config.json, metrics.json, "
                         "weights.safetensors, standardize.safetensors, lgbm_<i>.txt, *.png)")
    big = [n for n, b in files.items() if len(b) > MAX_FILE_BYTES]
    if big:
        raise EmbrmError(f"{where}: {big[0]} is over {MAX_FILE_BYTES >> 30} GB")
    if CONFIG not in files:
        raise EmbrmError(f"{where}: a run needs its config.json")
    cfg = check_config(files[CONFIG], where)
    if METRICS in files:
        try:
            json.loads(files[METRICS].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise EmbrmError(f"{where}: metrics.json is not valid JSON") from None
    method, members = cfg["train"]["method"], cfg["train"]["ensemble"]
    if STATS in files:  # standardisation statistics: a mean and a std per input dimension
        header = check_safetensors(files[STATS], None, cfg["dim"], where, STATS)
        if any(not isinstance(header.get(k), dict) or header[k]["shape"] != [cfg["dim"]] for k in ("mean", "std")):
            raise EmbrmError(f"{where}: {STATS} does not hold a mean and a std of dim {cfg['dim']}")
    # what the method's files must hold, from the method object (embrm.methods: the one registry)
    try:
        expected = methods.get(method).files(cfg["train"], cfg["dim"])
    except EmbrmError as e:
        raise EmbrmError(f"{where}: {e}") from None
    for name, tensors in expected.items():
        if name not in files:
            raise EmbrmError(f"{where}: a {method} run of {members} members needs {name}")
        if tensors is not None:
            header = check_safetensors(files[name], members if "w0" in tensors else None, cfg["dim"], where, name)
            check_tensors(header, tensors, where, name)
    return cfg


def check_safetensors(raw: bytes, members: int | None, dim: int, where: str, name: str) -> dict[str, Any]:
    """Parse a safetensors header (no torch) and check that its tensors lie inside the
    file and, for weights (``members`` given), that the first layer is
    ``(members, dim, ...)``; returns the header."""
    if len(raw) < 8:
        raise EmbrmError(f"{where}: {name} is cut short")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > min(len(raw) - 8, MAX_JSON_BYTES):
        raise EmbrmError(f"{where}: {name} has a header longer than the file")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise EmbrmError(f"{where}: {name} has no valid header") from None
    if not isinstance(header, dict):
        raise EmbrmError(f"{where}: {name} has no valid header")
    size = len(raw) - 8 - n
    sizes = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}
    for key, t in header.items():
        if key == "__metadata__":
            continue
        ok = isinstance(t, dict) and t.get("dtype") in sizes and isinstance(t.get("shape"), list) and \
            all(isinstance(d, int) and d >= 0 for d in t["shape"]) and isinstance(t.get("data_offsets"), list) and \
            len(t["data_offsets"]) == 2 and all(isinstance(o, int) for o in t["data_offsets"])
        if not ok:
            raise EmbrmError(f"{where}: tensor {str(key)[:40]!r} of {name} is malformed")
        start, end = t["data_offsets"]
        count = 1
        for d in t["shape"]:
            count *= d
        if not 0 <= start <= end <= size or end - start != count * sizes[t["dtype"]]:
            raise EmbrmError(f"{where}: tensor {str(key)[:40]!r} of {name} does not lie inside the file")
    if members is None:
        return header
    w0 = header.get("w0")
    if not isinstance(w0, dict) or len(w0["shape"]) != 3 or w0["shape"][:2] != [members, dim]:
        raise EmbrmError(f"{where}: {name} does not hold {members} members of input dim {dim}")
    return header


def check_tensors(header: dict[str, Any], expected: dict[str, list[int]], where: str, name: str) -> None:
    """Every tensor the method expects, in exactly its shape, and no other."""
    got = {k: v["shape"] for k, v in header.items() if k != "__metadata__"}
    for key, shape in expected.items():
        if got.get(key) != shape:
            raise EmbrmError(f"{where}: tensor {key} of {name} should have shape {shape}, has {got.get(key)}")
    extra = sorted(set(got) - set(expected))
    if extra:
        raise EmbrmError(f"{where}: {name} holds a tensor {extra[0][:40]!r} that this method's runs do not have")


def read_files(run_dir: Path) -> dict[str, bytes]:
    """The files of a run directory that a run holds (see :data:`FILE_NAME`), checked.
    Subdirectories (``eval-*``) and anything else stay behind."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EmbrmError(f"{run_dir} is not a directory; pass the --out of `embrm train`")
    files = {p.name: p.read_bytes() for p in sorted(run_dir.iterdir())
             if p.is_file() and not p.is_symlink() and FILE_NAME.fullmatch(p.name)}
    check_files(files, str(run_dir))
    return files
