"""The active-learning loop on arrays: draw candidates, select, label, retrain, evaluate.

One run is one selection rule and one seed. What a study varies is passed in as
functions, so the same loop serves the simulated study on multi-response data (golden
rewards and a simulated annotator) and a fixed pool of human-labelled pairs (labels
revealed only when selected):

* ``candidates(round)`` -> item-index pairs ``(a, b)`` the rule may choose from;
* ``label(a, b, round)`` -> 1 where ``a`` wins;
* ``evaluate(model)`` -> a dict of metrics on held-out data.

Rules compared under one seed see the same candidate draws, the same first batch (the
first round is random for every rule: there is no model to select with yet) and the
same initialisation, so their curves differ by the rule alone plus annotator noise.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from embrm.rm.active import RIDGE, select
from embrm.rm.pairs import Pairs
from embrm.rm.rules import check_rule
from embrm.rm.trainer import RewardModel, TrainConfig, train


@dataclass
class LoopConfig:
    rule: str = "dopt"
    rounds: int = 20
    per_round: int = 100
    warm_start: bool = False  # start each round from the last model instead of from scratch
    holdout: float = 0.2  # labelled pairs kept out of training for early stopping (0: train on all)
    ridge: float = RIDGE
    seed: int = 0


def fit(x: np.ndarray, pairs: Pairs, tc: TrainConfig, lc: LoopConfig, prev: RewardModel | None) -> RewardModel:
    """Train on the labelled pairs. A ``holdout`` share of them, drawn per pair from the
    seed (so a pair stays on its side as the set grows), is the early-stopping set; with
    none, or a single pair, the training pairs are."""
    val = np.random.default_rng(lc.seed).random(len(pairs)) < lc.holdout
    if not val.any():
        val[0] = True
    if val.all():
        val[0] = False
    tp, vp = (pairs.subset(~val), pairs.subset(val)) if lc.holdout > 0 and len(pairs) > 1 else (pairs, pairs)
    return train(x, tp, vp, tc, init=prev if lc.warm_start else None)


def run(x: np.ndarray, candidates: Callable[[int], tuple[np.ndarray, np.ndarray]],
        label: Callable[[np.ndarray, np.ndarray, int], np.ndarray], evaluate: Callable[[RewardModel], dict[str, Any]],
        tc: TrainConfig, lc: LoopConfig, item_prompt: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Run ``lc.rounds`` rounds; one record per round: labels so far, timings, metrics."""
    check_rule(lc.rule)
    tc = replace(tc, seed=lc.seed)
    la, lb, ly = (np.empty(0, np.int64),) * 2 + (np.empty(0, np.float32),)
    model: RewardModel | None = None
    out = []
    for r in range(lc.rounds):
        ca, cb = candidates(r)
        rule = lc.rule if model is not None else "random"
        t0 = time.perf_counter()
        pick = select(rule, model, x, ca, cb, lc.per_round, la, lb, seed=lc.seed * 100_003 + r, ridge=lc.ridge)
        t1 = time.perf_counter()
        la, lb = np.concatenate([la, ca[pick]]), np.concatenate([lb, cb[pick]])
        ly = np.concatenate([ly, label(ca[pick], cb[pick], r)]).astype(np.float32)
        prompt = item_prompt if item_prompt is not None else np.zeros(len(x), np.int64)
        pairs = Pairs(la, lb, ly, prompt[la], prompt[lb])
        model = fit(x, pairs, tc, lc, model)
        t2 = time.perf_counter()
        metrics = evaluate(model)
        out.append({"rule": lc.rule, "seed": lc.seed, "round": r, "labels": int(len(la)), "select_s": t1 - t0,
                    "train_s": t2 - t1, "eval_s": time.perf_counter() - t2, "epochs": model.log.epochs, **metrics})
    return out


__all__ = ["LoopConfig", "fit", "run"]
