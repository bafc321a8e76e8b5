"""The names of the active-learning selection rules (:mod:`embrm.rm.active`).

Kept apart, free of numpy and torch, so that the command line can list them in
``--help`` without importing what the rules need.
"""
from __future__ import annotations

from embrm.errors import EmbrmError

RULES = ("random", "uncertainty", "disagreement", "dopt", "dopt-past")


def check_rule(rule: str) -> None:
    if rule not in RULES:
        raise EmbrmError(f"unknown selection rule {rule!r}; use one of {', '.join(RULES)}")
