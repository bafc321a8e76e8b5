"""Reward models on stored embeddings: pairs, trainers, ensembles, metrics, plots.

Never imports transformers. Everything here also works on plain numpy arrays.
"""
from embrm.rm.evaluate import evaluate_multi, evaluate_pairs, table
from embrm.rm.metrics import aggregate, best_of_n, pairwise_accuracy, spearman_per_prompt
from embrm.rm.pairs import Pairs, annotate, build_pairs, make_pairs, split_prompts
from embrm.rm.train import RewardModel, TrainConfig, train

__all__ = ["Pairs", "RewardModel", "TrainConfig", "aggregate", "annotate", "best_of_n", "build_pairs",
           "evaluate_multi", "evaluate_pairs", "make_pairs", "pairwise_accuracy", "spearman_per_prompt",
           "split_prompts", "table", "train"]
