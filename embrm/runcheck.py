"""The one check of a reward-model run: its config's types and ranges, and every weight
file against what the config implies. No torch; numpy reads the weights in place.

Why one check, here: a run arrives from a trainer's disk, from a store, or over the
network from anyone, and is used by ``rm push`` (local, object store, service), ``serve
--rm``, the service's published runs, ``score``, ``eval``, ``active select`` and ``rm
pull``. Each of them calls :func:`embrm.runformat.check_files`, which calls what is here,
so a run that one of them accepts, all of them accept, and a run that is loaded
(:func:`embrm.rm.run.load_run`) holds exactly the tensors its config describes:

* the ``train`` section: known keys only, each of its type and in its range
  (:data:`TRAIN`);
* safetensors: the header read without torch (8-byte little-endian length, a JSON
  header of dtype, shape and offsets); the tensors the method expects
  (:mod:`embrm.runshapes`), no other, each float32 of exactly its shape, tiling the data
  exactly; the total the config implies compared with the file's size *before* anything
  else, so no number in a config can make anyone allocate more than the file holds;
  every value finite;
* standardisation statistics: ``mean`` and ``std`` of shape ``(dim,)``, finite, ``std > 0``;
* LightGBM text: the header and every tree's arrays, their lengths, child indices and
  feature indices within bounds (LightGBM itself does not bounds-check them).

Every refusal is one line naming the field and what it should be.
"""
from __future__ import annotations

import json
import math
import re
import struct
from typing import Any

import numpy as np

from embrm import methods, runshapes
from embrm.errors import EmbrmError
from embrm.printable import printable

MAX_DIM = 1 << 20
MAX_MEMBERS = 4096
MAX_LAYERS = 16
MAX_WIDTH = 1 << 20
FINITE_CHUNK = 1 << 20  # values checked for finiteness at a time (bounded scratch memory)


def _int(lo: int, hi: int, none: bool = False) -> tuple[str, Any]:
    return ("int", (lo, hi, none))


def _num(lo: float, hi: float, none: bool = False, open_lo: bool = False) -> tuple[str, Any]:
    return ("float", (lo, hi, none, open_lo))


#: The ``train`` section of ``config.json``: every key :class:`~embrm.rm.trainer.TrainConfig`
#: has, its type and range (a test keeps the two in step). Format-1 runs may lack keys.
TRAIN: dict[str, tuple[str, Any]] = {
    "method": ("method", None),  # a name the registry knows (embrm.methods)
    "ensemble": _int(1, MAX_MEMBERS),
    "hidden": ("hidden", None),
    "lr": _num(0, math.inf, open_lo=True),
    "weight_decay": _num(0, math.inf),
    "batch_size": _int(1, 1 << 30, none=True),
    "max_epochs": _int(1, 1 << 20),
    "patience": _int(1, 1 << 20),
    "bootstrap": ("bool", False),
    "seed": _int(0, (1 << 63) - 1),
    "bf16": ("bool", True),
    "member_group": _int(0, MAX_MEMBERS),
    "lgbm_rounds": _int(1, 1 << 20),
    "device": ("choice", ("auto", "cpu", "cuda", "mps")),
    "standardize": ("bool", True),
    "l2": _num(0, math.inf, none=True, open_lo=True),
}
#: The ``log`` section: what :class:`~embrm.rm.trainer.TrainLog` has.
LOG = {"epochs": int, "best_epoch": list, "val_loss": list, "seconds": (int, float), "batch_size": int,
       "steps": int, "val_pair_loss": list, "l2_path": list}


def _value(where: str, key: str, v: Any, kind: str, spec: Any) -> None:
    """One ``train`` value against its type and range; raises naming ``train.<key>``."""
    field = f"{where}: config.json train.{key}"
    if kind == "method":
        if not isinstance(v, str) or not methods.known(v):
            raise EmbrmError(f"{field} is {_show(v)}; expected one of {', '.join(methods.names())} (or a plug-in "
                             "method this process has: entry point group embrm.methods, or $EMBRM_METHODS)")
    elif kind == "choice":
        if v not in spec:
            raise EmbrmError(f"{field} is {_show(v)}; expected one of {', '.join(spec)}")
    elif kind == "bool":
        if not (isinstance(v, bool) or (spec and v is None)):
            raise EmbrmError(f"{field} is {_show(v)}; expected true or false" + (" or null" if spec else ""))
    elif kind == "int":
        lo, hi, none = spec
        if v is None and none:
            return
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise EmbrmError(f"{field} is {_show(v)}; expected an integer from {lo} to {hi}"
                             + (" or null" if none else ""))
    elif kind == "float":
        lo, hi, none, open_lo = spec
        if v is None and none:
            return
        ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and \
            (v > lo if open_lo else v >= lo) and v <= hi
        if not ok:
            raise EmbrmError(f"{field} is {_show(v)}; expected a finite number {'>' if open_lo else '>='} {lo:g}"
                             + (" or null" if none else ""))
    elif kind == "hidden":
        ok = isinstance(v, list) and len(v) <= MAX_LAYERS and \
            all(isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= MAX_WIDTH for h in v)
        if not ok:
            raise EmbrmError(f"{field} is {_show(v)}; expected a list of at most {MAX_LAYERS} layer sizes, "
                             f"each an integer from 1 to {MAX_WIDTH}")


def _show(v: Any) -> str:
    return json.dumps(v)[:60] if not isinstance(v, float) or math.isfinite(v) else str(v)


def check_train(train: Any, where: str) -> dict[str, Any]:
    """The ``train`` section: a JSON object of known keys, each of its type and range."""
    if not isinstance(train, dict):
        raise EmbrmError(f"{where}: config.json has no train section (a JSON object)")
    unknown = sorted(str(k) for k in train if k not in TRAIN)
    if unknown:
        raise EmbrmError(f"{where}: config.json train.{unknown[0][:40]} is not a training setting; expected only "
                         f"{', '.join(TRAIN)}")
    for key in ("method", "ensemble"):
        if key not in train:
            raise EmbrmError(f"{where}: config.json has no train.{key}")
    for key, v in train.items():
        _value(where, key, v, *TRAIN[key])
    return train


def check_fields(cfg: dict[str, Any], where: str) -> None:
    """The top-level fields embrm reads, each of its type (the train section aside)."""
    d = cfg.get("dim")
    if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= MAX_DIM:
        raise EmbrmError(f"{where}: config.json dim is {_show(d)}; expected an integer from 1 to {MAX_DIM}")
    layer = cfg.get("layer")
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or abs(layer) > 1 << 16):
        raise EmbrmError(f"{where}: config.json layer is {_show(layer)}; expected a layer number")
    for key in ("model_hash", "model_name", "dataset_hash", "dataset_name", "embrm_version", "store"):
        if cfg.get(key) is not None and not isinstance(cfg[key], str):
            raise EmbrmError(f"{where}: config.json {key} is {_show(cfg[key])}; expected a string")
    for key in ("embedding", "data"):
        if cfg.get(key) is not None and not isinstance(cfg[key], dict):
            raise EmbrmError(f"{where}: config.json {key} is {_show(cfg[key])}; expected a JSON object")
    vp = cfg.get("val_prompts")
    if vp is not None and not (isinstance(vp, list) and all(isinstance(p, int) and not isinstance(p, bool)
                                                            and 0 <= p < 1 << 40 for p in vp)):
        raise EmbrmError(f"{where}: config.json val_prompts must be a list of prompt numbers (integers >= 0)")
    log = cfg.get("log", {})
    if not isinstance(log, dict):
        raise EmbrmError(f"{where}: config.json log is {_show(log)}; expected a JSON object")
    for key, v in log.items():
        if key not in LOG:
            raise EmbrmError(f"{where}: config.json log.{str(key)[:40]} is not a training log field; expected only "
                             f"{', '.join(LOG)}")
        if isinstance(v, bool) or not isinstance(v, LOG[key]):
            raise EmbrmError(f"{where}: config.json log.{key} is {_show(v)}; expected a "
                             f"{'list' if LOG[key] is list else 'number'}")


# ----------------------------------------------------------------- safetensors
DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "F64": np.dtype("<f8")}


def header(raw: Any, where: str, name: str) -> tuple[dict[str, Any], int]:
    """A safetensors file's header (no ``__metadata__``) and where its data starts; each
    tensor's dtype, shape and offsets well-formed and inside the file."""
    if len(raw) < 8:
        raise EmbrmError(f"{where}: {name} is cut short (under 8 bytes)")
    (n,) = struct.unpack("<Q", bytes(raw[:8]))
    if n > len(raw) - 8 or n > 64 << 20:
        raise EmbrmError(f"{where}: {name} has a header longer than the file")
    try:
        head = json.loads(bytes(raw[8:8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise EmbrmError(f"{where}: {name} has no valid header (not safetensors)") from None
    if not isinstance(head, dict):
        raise EmbrmError(f"{where}: {name} has no valid header (not safetensors)")
    head.pop("__metadata__", None)
    size = len(raw) - 8 - n
    spans = []
    for key, t in head.items():
        ok = isinstance(t, dict) and t.get("dtype") in DTYPES and isinstance(t.get("shape"), list) and \
            all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 1 << 40 for d in t["shape"]) and \
            isinstance(t.get("data_offsets"), list) and len(t["data_offsets"]) == 2 and \
            all(isinstance(o, int) and not isinstance(o, bool) for o in t["data_offsets"])
        if not ok:
            raise EmbrmError(f"{where}: tensor {str(key)[:40]!r} of {name} is malformed")
        start, end = t["data_offsets"]
        count = math.prod(t["shape"])
        if not 0 <= start <= end <= size or end - start != count * DTYPES[t["dtype"]].itemsize:
            raise EmbrmError(f"{where}: tensor {str(key)[:40]!r} of {name} does not lie inside the file")
        spans.append((start, end))
    at = 0
    for start, end in sorted(spans):
        if start != at:
            raise EmbrmError(f"{where}: the tensors of {name} overlap or leave gaps; the file is damaged")
        at = end
    if at != size:
        raise EmbrmError(f"{where}: {name} holds {size - at} bytes beyond its tensors; the file is damaged")
    return head, 8 + n


def values(raw: Any, t: dict[str, Any], base: int) -> np.ndarray:
    """A tensor's values as a flat numpy view of ``raw`` (no copy)."""
    start, end = t["data_offsets"]
    return np.frombuffer(raw, DTYPES[t["dtype"]], (end - start) // DTYPES[t["dtype"]].itemsize, base + start)


def all_finite(v: np.ndarray, dtype: str) -> bool:
    """Whether every value is finite, a chunk at a time (bf16 by its exponent bits)."""
    for s in range(0, len(v), FINITE_CHUNK):
        c = v[s:s + FINITE_CHUNK]
        ok = (c & 0x7F80) != 0x7F80 if dtype == "BF16" else np.isfinite(c)
        if not ok.all():
            return False
    return True


def check_tensors(raw: Any, want: runshapes.Shapes, where: str, name: str) -> dict[str, Any]:
    """A safetensors file holding exactly the float32 tensors ``want`` (name -> shape),
    every value finite; returns its header."""
    need = 8 + 4 * runshapes.count(want)
    if len(raw) < need:  # before anything else: no config number may allocate more than the file holds
        raise EmbrmError(f"{where}: the config implies {runshapes.count(want)} weights ({need} bytes), and {name} "
                         f"holds {len(raw)} bytes; the config does not describe these weights")
    head, base = header(raw, where, name)
    missing = [k for k in want if k not in head]
    if missing:
        raise EmbrmError(f"{where}: {name} has no tensor {missing[0]}; the config implies "
                         f"{', '.join(f'{k} {list(s)}' for k, s in want.items())}")
    extra = sorted(str(k) for k in head if k not in want)
    if extra:
        raise EmbrmError(f"{where}: {name} holds tensor {extra[0][:40]!r}, which the config does not imply "
                         f"(expected only {', '.join(want)})")
    for key, shape in want.items():
        t = head[key]
        if tuple(t["shape"]) != shape or t["dtype"] != "F32":
            raise EmbrmError(f"{where}: tensor {key} of {name} is {t['dtype']} {t['shape']}; the config implies "
                             f"F32 {list(shape)}")
        if not all_finite(values(raw, t, base), t["dtype"]):
            raise EmbrmError(f"{where}: tensor {key} of {name} holds NaN or infinite values; retrain the run")
    return head


def check_stats(raw: Any, dim: int, where: str, name: str) -> None:
    """Standardisation statistics: finite ``mean`` and ``std`` of shape ``(dim,)``, ``std > 0``."""
    head = check_tensors(raw, {"mean": (dim,), "std": (dim,)}, where, name)
    std = values(raw, head["std"], 8 + struct.unpack("<Q", bytes(raw[:8]))[0])
    if not (std > 0).all():
        raise EmbrmError(f"{where}: {name} has a std of {float(std[~(std > 0)][0]):g}; every std must be > 0 "
                         "(a standardisation divides by it)")


# -------------------------------------------------------------------- LightGBM
#: Per-tree arrays and their lengths, for a tree of N leaves.
TREE_ARRAYS = {"split_feature": -1, "threshold": -1, "decision_type": -1, "left_child": -1, "right_child": -1,
               "leaf_value": 0, "split_gain": -1, "leaf_weight": 0, "leaf_count": 0, "internal_value": -1,
               "internal_weight": -1, "internal_count": -1}
INTS = ("split_feature", "decision_type", "left_child", "right_child", "leaf_count", "internal_count")
TREE_KEYS = {*TREE_ARRAYS, "num_leaves", "num_cat", "is_linear", "shrinkage"}
HEADER_LINE = re.compile(r"[a-z_]+(=[^\n]*)?")
#: What follows the trees, line by line: LightGBM's own parser of this part crashes the
#: process on a malformed line (found by the fuzz in tests/test_hostile_runs.py).
TAIL = [re.compile(r"end of trees"), re.compile(r""), re.compile(r"feature_importances:"),
        re.compile(r"[^\s=\[\]]+=\d+"), re.compile(r""), re.compile(r"parameters:"),
        re.compile(r"\[[a-z0-9_]+: [^\[\]\n]*\]"), re.compile(r""), re.compile(r"end of parameters"), re.compile(r""),
        re.compile(r"pandas_categorical:[^\n]*"), re.compile(r"")]
REPEATED = (3, 4, 6, 7)  # importances, parameters and blank lines between: any number of lines


def check_lgbm(raw: bytes, dim: int, where: str, name: str) -> None:
    """A LightGBM model text that LightGBM can read safely: one binary output over
    ``dim`` features; every tree's arrays of the lengths its ``num_leaves`` implies, child
    and feature indices in bounds, thresholds and leaf values finite; ``tree_sizes``
    (which LightGBM uses to slice the text) exactly the trees' sizes."""
    try:
        text = bytes(raw).decode("ascii")
    except UnicodeDecodeError:
        raise EmbrmError(f"{where}: {name} is not a LightGBM model text (not ASCII)") from None
    head, sep, _ = text.partition("\nTree=")
    end = text.find("\nend of trees")
    if not text.startswith("tree\n") or not sep or end < 0:
        raise EmbrmError(f"{where}: {name} is not a LightGBM model text (expected 'tree', trees, 'end of trees')")
    lines = head.splitlines()[1:]
    bad = next((line for line in lines if line and not HEADER_LINE.fullmatch(line)), None)
    if bad is not None:
        raise EmbrmError(f"{where}: {name} has a header line {printable(bad, 40)!r} that is not key=value")
    keys = dict(line.split("=", 1) for line in lines if "=" in line)
    want = {"num_class": "1", "num_tree_per_iteration": "1", "max_feature_idx": str(dim - 1)}
    for key, v in want.items():
        if keys.get(key) != v:
            raise EmbrmError(f"{where}: {name} has {key}={keys.get(key, '(none)')[:40]}; a run of dim {dim} needs "
                             f"{key}={v}")
    starts = [i + 1 for i in range(len(head), end) if text.startswith("\nTree=", i)]
    sizes = [b - a for a, b in zip(starts, [*starts[1:], end + 1])]
    if "tree_sizes" in keys and keys["tree_sizes"].split() != [str(s) for s in sizes]:
        raise EmbrmError(f"{where}: {name} has tree_sizes that do not match its trees; the file is damaged")
    for key in ("feature_names", "feature_infos"):
        if len(keys.get(key, "").split()) != dim:
            raise EmbrmError(f"{where}: {name} has {len(keys.get(key, '').split())} {key}; a run of dim {dim} needs "
                             f"{dim}")
    for t, (a, b) in enumerate(zip(starts, [*starts[1:], end + 1])):
        _check_tree(text[a:b], t, dim, where, name)
    _check_tail(text[end + 1:], where, name)


def _check_tail(tail: str, where: str, name: str) -> None:
    """The lines after the trees, each of the shape LightGBM writes (see :data:`TAIL`)."""
    lines, at = tail.split("\n"), 0
    for i, pattern in enumerate(TAIL):
        if i in REPEATED:
            while at < len(lines) and pattern.fullmatch(lines[at]):
                at += 1
            continue
        if at >= len(lines) or not pattern.fullmatch(lines[at]):
            shown = printable(lines[at], 40) if at < len(lines) else "the end of the file"
            raise EmbrmError(f"{where}: {name} has {shown!r} after its trees, where LightGBM writes "
                             f"{pattern.pattern!r}; the file is damaged")
        at += 1
    if at != len(lines) and any(lines[at:]):
        raise EmbrmError(f"{where}: {name} has text after pandas_categorical; the file is damaged")


def _numbers(tree: dict[str, str], key: str, n: int, t: int, where: str, name: str, kind: type) -> list[Any]:
    try:
        vals = [kind(v) for v in tree.get(key, "").split()]
    except ValueError:
        raise EmbrmError(f"{where}: {name} tree {t}: {key} holds something other than numbers") from None
    if len(vals) != n:
        raise EmbrmError(f"{where}: {name} tree {t}: {key} has {len(vals)} values; its num_leaves implies {n}")
    if kind is float and not all(math.isfinite(v) for v in vals):
        raise EmbrmError(f"{where}: {name} tree {t}: {key} holds NaN or infinite values")
    return vals


def _check_tree(block: str, t: int, dim: int, where: str, name: str) -> None:
    body = block.splitlines()[1:]  # after Tree=<t>
    bad = next((line for line in body if line and line.split("=", 1)[0] not in TREE_KEYS), None)
    if bad is not None or not block.startswith(f"Tree={t}\n"):
        raise EmbrmError(f"{where}: {name} tree {t}: {printable(bad or block[:20], 40)!r} is not a line of a tree")
    tree = dict(line.split("=", 1) for line in body if "=" in line)
    leaves = tree.get("num_leaves", "")
    if not leaves.isdigit() or not 1 <= int(leaves) <= 1 << 17:
        raise EmbrmError(f"{where}: {name} tree {t}: num_leaves is {leaves[:20]!r}; expected 1 to {1 << 17}")
    n = int(leaves)
    if tree.get("num_cat", "0") != "0" or tree.get("is_linear", "0") != "0":
        raise EmbrmError(f"{where}: {name} tree {t}: categorical or linear trees are not what embrm trains "
                         "(expected num_cat=0, is_linear=0)")
    for key, extra in TREE_ARRAYS.items():
        kind = int if key in INTS else float
        vals = _numbers(tree, key, n + extra, t, where, name, kind)
        if key == "split_feature" and any(not 0 <= f < dim for f in vals):
            raise EmbrmError(f"{where}: {name} tree {t}: a split_feature is outside 0..{dim - 1}")
        if key in ("left_child", "right_child") and any(not (0 <= c < n - 1 or 0 <= ~c < n) for c in vals):
            raise EmbrmError(f"{where}: {name} tree {t}: {key} points outside the tree's {n} leaves")
        if key == "decision_type" and any(d & 1 or not 0 <= d < 16 for d in vals):
            raise EmbrmError(f"{where}: {name} tree {t}: decision_type is not a numerical split")
