"""Per-dimension feature standardisation, fitted on a run's training items only.

Why: an LLM's hidden-state dimensions differ in scale by orders of magnitude (a few
"massive activation" dimensions of SmolLM2's last token are hundreds of times larger than
the median one). An L2 penalty, weight decay, or one Adam learning rate for every
weight then treats the dimensions very unequally; dividing each dimension by its
training-set standard deviation puts them on one footing.

The statistics come from the training split alone (a validation or test row must not
move them, or the held-out numbers would be optimistic), are saved beside the run's
weights (``standardize.safetensors``) and applied inside
:meth:`~embrm.rm.trainer.RewardModel.score`, so ``embrm score``, ``embrm eval`` and
anything that scores through a loaded run apply them without knowing. A run without
the file (every run from before standardisation) scores its inputs unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from embrm.rm.pairs import Pairs
from embrm.runformat import STATS

FILE = STATS  # the run file of the statistics, standardize.safetensors (named in embrm.runformat)

# A dimension whose training values (nearly) never vary is left unscaled: dividing by a
# zero or denormal standard deviation would blow up the rows it does vary on later.
MIN_STD = 1e-12


@dataclass
class Standardizer:
    """``(x - mean) / std`` per dimension; both ``(D,)`` float32."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray | torch.Tensor, pairs: Pairs) -> Standardizer:
        """Mean and (population) standard deviation over the distinct items of ``pairs``.

        Each item counts once however many pairs it is in, as a scaler fitted on the
        training responses would; accumulation is in float64 so a dimension with a large
        mean keeps its small spread.
        """
        rows = np.unique(np.concatenate([pairs.a, pairs.b]))
        if isinstance(x, torch.Tensor):
            xs = x.index_select(0, torch.from_numpy(rows).to(x.device)).double()
            mean, std = xs.mean(0).cpu().numpy(), xs.std(0, correction=0).cpu().numpy()
        else:
            xs = np.asarray(x)[rows].astype(np.float64)
            mean, std = xs.mean(0), xs.std(0)
        std = np.where(std > MIN_STD, std, 1.0)
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def apply(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Standardised float32 copy of ``x`` (numpy, or a tensor on any device)."""
        if isinstance(x, torch.Tensor):
            mean = torch.from_numpy(self.mean).to(x.device)
            std = torch.from_numpy(self.std).to(x.device)
            return (x.float() - mean) / std
        return (np.asarray(x, dtype=np.float32) - self.mean) / self.std

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"mean": torch.from_numpy(self.mean.copy()), "std": torch.from_numpy(self.std.copy())}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> Standardizer:
        return cls(t["mean"].float().numpy(), t["std"].float().numpy())
