"""What each method family's run holds, given its config: one function per family.

A run's config says how big its model is (members, input dim, hidden sizes); the files
must hold exactly that, nothing more and nothing less. These functions say what
"exactly that" is, without torch, so that the store, the service and the trainer
check a run the same way (:mod:`embrm.runcheck` does the checking).

* :func:`mlp_tensors`: ``bt`` and ``clf``, an :class:`~embrm.rm.models.EnsembleMLP`
  ``dim -> hidden... -> 1`` with biases;
* :func:`linear_tensors`: ``linear``, ``logreg`` and ``logreg-clf``, the same net with
  no hidden layer (``train.hidden`` is not used: a ``linear`` run still records the
  default one);
* :func:`lgbm_files`: ``lgbm``, one LightGBM text file per member.

Each method object's ``files`` (:mod:`embrm.rm.methods`) calls the function of its family.
"""
from __future__ import annotations

from typing import Any

Shapes = dict[str, tuple[int, ...]]
#: ``train.hidden`` where a format-1 run does not record it (TrainConfig's default; a test
#: keeps the two equal).
DEFAULT_HIDDEN = (1024, 512)


def _net(members: int, sizes: list[int]) -> Shapes:
    """Tensors of an :class:`~embrm.rm.models.EnsembleMLP` with layer sizes ``sizes``:
    ``w<i>`` is ``(M, d_in, d_out)`` and ``b<i>`` ``(M, 1, d_out)`` (saved even where the
    net has no bias: then it is zeros)."""
    out: Shapes = {}
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        out[f"w{i}"] = (members, d_in, d_out)
        out[f"b{i}"] = (members, 1, d_out)
    return out


def mlp_tensors(train: dict[str, Any], dim: int) -> Shapes:
    """``bt``, ``clf``: ``dim -> hidden... -> 1``."""
    return _net(train["ensemble"], [dim, *train.get("hidden", DEFAULT_HIDDEN), 1])


def linear_tensors(train: dict[str, Any], dim: int) -> Shapes:
    """``linear``, ``logreg``, ``logreg-clf``: ``dim -> 1``."""
    return _net(train["ensemble"], [dim, 1])


def lgbm_files(train: dict[str, Any], dim: int) -> list[str]:
    """``lgbm``: ``lgbm_0.txt`` .. ``lgbm_<M-1>.txt``, each a booster over ``dim`` features."""
    return [f"lgbm_{i}.txt" for i in range(train["ensemble"])]


def count(shapes: Shapes) -> int:
    """How many numbers the tensors hold (Python integers: computing it allocates nothing)."""
    total = 0
    for shape in shapes.values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total
