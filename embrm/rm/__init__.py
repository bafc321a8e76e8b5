"""Reward models on stored embeddings: pairs, trainers, ensembles, metrics, plots.

Never imports transformers. Everything here also works on plain numpy arrays. Names
are imported lazily, so that the CLI does not pay for torch until it trains.
"""
from __future__ import annotations

from embrm.lazy import lazy_exports

_NAMES = {
    "evaluate_multi": "embrm.rm.evaluate", "evaluate_pairs": "embrm.rm.evaluate", "table": "embrm.rm.evaluate",
    "aggregate": "embrm.rm.metrics", "best_of_n": "embrm.rm.metrics", "pairwise_accuracy": "embrm.rm.metrics",
    "spearman_per_prompt": "embrm.rm.metrics",
    "Pairs": "embrm.rm.pairs", "annotate": "embrm.rm.pairs", "build_pairs": "embrm.rm.pairs",
    "make_pairs": "embrm.rm.pairs", "split_prompts": "embrm.rm.pairs",
    "RewardModel": "embrm.rm.trainer", "TrainConfig": "embrm.rm.trainer", "train": "embrm.rm.trainer",
}

__getattr__ = lazy_exports(__name__, _NAMES)


__all__ = sorted(_NAMES)
