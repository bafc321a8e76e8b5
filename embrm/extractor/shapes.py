"""Record shapes: which shape a dataset's records have, and each record as embrm's rows.

Shapes, recognised from the columns of the first record:

* **pairwise**: ``prompt``, ``chosen``, ``rejected`` -> two rows (chosen, rejected);
* **HH-RLHF**: ``chosen``/``rejected`` transcripts without a prompt column; the prompt is
  the shared text through the last ``\\n\\nAssistant:``;
* **two-prompt pairs**: ``prompt_a``, ``response_a``, ``prompt_b``, ``response_b`` and a
  ``winner`` (``a`` or ``b``) -> two rows (chosen = the winner, rejected), each with its
  own prompt, so a pair may compare responses to two different prompts (the file
  ``embrm active select`` writes, once annotators fill in ``winner``);
* **multi**: ``prompt``, ``responses[K]``, optional ``rewards[K]``;
* **pointwise**: ``prompt``, ``response``, optional ``reward`` or ``label``;
* **messages**: a list of ``{role, content}`` whose last assistant turn is the response.

A row is ``{prompt, response, prompt_id, response_index, role, label, reward}``. A bad
record is one line naming it (:class:`BadRecord` where ``--skip-bad-rows`` may skip it).
Reading the records from files and the hub is :mod:`embrm.extractor.datasets`.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from embrm.errors import EmbrmError

ASSISTANT = "\n\nAssistant:"


@dataclass(frozen=True)
class Columns:
    """Column names of the source; flags on the CLI map a dataset's own names."""

    prompt: str = "prompt"
    response: str = "response"
    chosen: str = "chosen"
    rejected: str = "rejected"
    responses: str = "responses"
    rewards: str = "rewards"
    reward: str = "reward"
    label: str = "label"
    messages: str = "messages"
    winner: str = "winner"  # A/B records: which of a and b won (a/b, model_a/model_b, 1/2)


#: The columns of a two-prompt pair (``embrm active select`` writes them).
PAIR2 = ("prompt_a", "response_a", "prompt_b", "response_b")
WINNER = "winner"
#: A/B records of one prompt: the prompt column, these two, and a winner column (--winner-col).
AB = ("response_a", "response_b")
#: LLMBar / MT-Bench (LLMBar's processed form): ``input`` is the prompt, ``label`` 1 or 2 the better output.
LLMBAR = ("input", "output_1", "output_2")
_WINNER_SIDE = {"a": "a", "b": "b", "model_a": "a", "model_b": "b", "1": "a", "2": "b"}


def detect_shape(rec: dict[str, Any], c: Columns) -> str:
    keys = set(rec)
    if c.messages in keys:
        return "messages"
    if set(LLMBAR) <= keys:
        if c.label not in keys:
            raise EmbrmError(f"LLMBar-style records ({', '.join(LLMBAR)}) need a {c.label!r} column (1 or 2, the "
                             f"better output); its columns are {sorted(keys)}")
        return "llmbar"
    if set(PAIR2) <= keys or ({c.prompt, *AB} <= keys):
        if c.winner not in keys:
            what = "a two-prompt pair file" if set(PAIR2) <= keys else "an A/B record file"
            raise EmbrmError(f"{what} needs a {c.winner!r} column ('a' or 'b'; name yours with --winner-col); its "
                             f"columns are {sorted(keys)}")
        return "pair2" if set(PAIR2) <= keys else "ab"
    if {c.chosen, c.rejected} <= keys:
        return "pairwise" if c.prompt in keys else "hh"
    if c.prompt in keys and c.responses in keys:
        return "multi"
    if {c.prompt, c.response} <= keys:
        return "pointwise"
    raise EmbrmError(
        f"cannot tell the dataset's shape from its columns {sorted(keys)}: expected "
        f"({c.prompt}, {c.chosen}, {c.rejected}), ({c.chosen}, {c.rejected}) transcripts, "
        f"({c.prompt}, {c.responses}), ({c.prompt}, {c.response}), {c.messages} or "
        f"({', '.join(PAIR2)}, {c.winner}), ({c.prompt}, {', '.join(AB)}, {c.winner}) or ({', '.join(LLMBAR)}, "
        f"{c.label}); "
        "map your names with --prompt-col, --chosen-col, ..."
    )


KIND_OF_SHAPE = {"pairwise": "pairwise", "hh": "pairwise", "pair2": "pairwise", "ab": "pairwise", "llmbar": "pairwise",
                 "multi": "multi",
                 "pointwise": "pointwise", "messages": "pointwise"}


def split_hh(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two HH-RLHF transcripts into (prompt, chosen reply, rejected reply).

    The prompt is the shared text through the last ``\\n\\nAssistant:`` that both
    transcripts contain at the same place; replies keep their exact text.
    """
    n = 0
    limit = min(len(chosen), len(rejected))
    while n < limit and chosen[n] == rejected[n]:
        n += 1
    cut = chosen.rfind(ASSISTANT, 0, n)  # the match must lie wholly inside the shared prefix
    if cut < 0:
        raise BadRecord("an HH-RLHF pair has no shared '\\n\\nAssistant:' turn; is this the HH format? "
                        "(--skip-bad-rows skips such records)")
    end = cut + len(ASSISTANT)
    return chosen[:end], chosen[end:], rejected[end:]


def _num(v: Any, what: str, i: int) -> float | None:
    if v is None:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise EmbrmError(f"record {i}: {what} {v!r} is not a number") from None
    if math.isnan(x):
        return None
    return x


class BadRecord(EmbrmError):
    """A record with a non-string text, or nothing to embed; ``--skip-bad-rows`` skips such records."""


def _text(v: Any, what: str, i: int) -> str:
    """A text field. Empty strings are real data (HH-RLHF has empty replies; an embedding
    request has an empty prompt), so only a value that is not text is bad."""
    if not isinstance(v, str):
        raise BadRecord(f"record {i}: {what} must be text, got {type(v).__name__}; fix the data or pass "
                        "--skip-bad-rows to skip such records")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:  # JSON can spell a lone surrogate ("\ud800"), which no UTF-8 text holds
        raise BadRecord(f"record {i}: {what} is not valid Unicode (a lone surrogate); fix the data or pass "
                        "--skip-bad-rows to skip such records") from None
    return v


def _something(prompt: str, response: str, i: int) -> None:
    if not prompt and not response:
        raise BadRecord(f"record {i}: prompt and response are both empty, so there is nothing to embed; "
                        "fix the data or pass --skip-bad-rows to skip such records")


def _messages(msgs: Any, i: int) -> tuple[str, str]:
    if not isinstance(msgs, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
        raise EmbrmError(f"record {i}: messages must be a list of {{role, content}}")
    last = max((j for j, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
    if last is None:
        raise EmbrmError(f"record {i}: messages have no assistant turn to embed")
    before = [{"role": m["role"], "content": m["content"]} for m in msgs[:last]]
    if len(before) == 1 and before[0]["role"] == "user":
        prompt = _text(before[0]["content"], "user content", i)
    else:  # several turns: the exact conversation, which the chat format renders back
        prompt = json.dumps(before, ensure_ascii=False)
    return prompt, _text(msgs[last]["content"], "assistant content", i)


class PromptIds:
    """Prompt ids by prompt text, in order of first appearance, for every shape.

    Records that repeat a prompt share its id (HH-RLHF repeats some prompts), so a split
    by prompt id is a split by prompt text. Each prompt's rows are numbered on across its
    records: the m-th pair of a prompt has response indices 2m and 2m + 1.
    """

    def __init__(self) -> None:
        self.ids: dict[bytes, int] = {}
        self.used: dict[int, int] = {}

    def take(self, prompt: str, n: int) -> tuple[int, int]:
        """(prompt id, first response index) for ``n`` more rows of ``prompt``."""
        pid = self.ids.setdefault(hashlib.sha1(prompt.encode()).digest(), len(self.ids))
        first = self.used.get(pid, 0)
        self.used[pid] = first + n
        return pid, first


def normalise(records: Iterator[dict[str, Any]], c: Columns, skip_bad: bool = False,
              stats: dict[str, int] | None = None) -> Iterator[dict[str, Any]]:
    """Records -> rows ``{prompt, response, prompt_id, response_index, role, label, reward}``.

    Every record must have the first record's shape. Rows that share a prompt text share
    a prompt id (:class:`PromptIds`); the two rows of a two-prompt pair take one each.
    A record with a non-string text, or with nothing to embed, is an error, or with
    ``skip_bad`` is dropped whole (a pair stays a pair) and counted in ``stats["skipped"]``.
    """
    shape = None
    ids = PromptIds()
    stats = stats if stats is not None else {}
    stats.setdefault("skipped", 0)
    for i, rec in enumerate(records):
        if shape is None:
            shape = detect_shape(rec, c)
        try:
            rows = _record_rows(rec, i, shape, c)
        except BadRecord:
            if not skip_bad:
                raise
            stats["skipped"] += 1
            continue
        except KeyError as e:
            raise EmbrmError(f"record {i} has no column {e.args[0]!r}; its columns are {sorted(rec)} (the first "
                             f"record's shape is {shape}): every record needs the same columns") from None
        if any(r["prompt"] != rows[0]["prompt"] for r in rows):  # a cross-prompt pair: an id per row
            for r in rows:
                r["prompt_id"], r["response_index"] = ids.take(r["prompt"], 1)
                yield r
            continue
        pid, first = ids.take(rows[0]["prompt"], len(rows))
        for j, r in enumerate(rows):
            r["prompt_id"], r["response_index"] = pid, first + j
            yield r


def _record_rows(rec: dict[str, Any], i: int, shape: str, c: Columns) -> list[dict[str, Any]]:
    """The rows of one record (prompt ids are set by the caller); raises if the record is bad."""
    if shape in ("pairwise", "hh"):
        if shape == "pairwise":
            p, ch, rj = (_text(rec[c.prompt], c.prompt, i), _text(rec[c.chosen], c.chosen, i),
                         _text(rec[c.rejected], c.rejected, i))
        else:
            p, ch, rj = split_hh(_text(rec[c.chosen], c.chosen, i), _text(rec[c.rejected], c.rejected, i))
        _something(p, ch, i)
        _something(p, rj, i)
        return [_row(p, ch, "chosen", 1.0, None), _row(p, rj, "rejected", 0.0, None)]
    if shape == "pair2":
        win, lose = _winner(rec[c.winner], c.winner, i)
        pw, rw_, pl, rl = (_text(rec[f"{col}_{side}"], f"{col}_{side}", i)
                           for side in (win, lose) for col in ("prompt", "response"))
        _something(pw, rw_, i)
        _something(pl, rl, i)
        return [_row(pw, rw_, "chosen", 1.0, None), _row(pl, rl, "rejected", 0.0, None)]
    if shape in ("ab", "llmbar"):
        if shape == "ab":
            win, lose = _winner(rec[c.winner], c.winner, i)
            p, ch, rj = rec[c.prompt], rec[f"response_{win}"], rec[f"response_{lose}"]
        else:
            first = _label12(rec[c.label], c.label, i)
            p, ch, rj = rec["input"], rec["output_1" if first else "output_2"], rec["output_2" if first else "output_1"]
        p, ch, rj = _text(p, "prompt", i), _text(ch, "chosen output", i), _text(rj, "rejected output", i)
        _something(p, ch, i)
        _something(p, rj, i)
        return [_row(p, ch, "chosen", 1.0, None), _row(p, rj, "rejected", 0.0, None)]
    if shape == "multi":
        p = _text(rec[c.prompt], c.prompt, i)
        rs = rec[c.responses]
        if not isinstance(rs, list) or not rs:
            raise EmbrmError(f"record {i}: {c.responses} must be a non-empty list")
        rw = rec.get(c.rewards)
        if rw is not None and (not isinstance(rw, list) or len(rw) != len(rs)):
            raise EmbrmError(f"record {i}: {c.rewards} must list one reward per response ({len(rs)})")
        out = []
        for j, r in enumerate(rs):
            _something(p, _text(r, c.responses, i), i)
            out.append(_row(p, r, "", None, None if rw is None else _num(rw[j], c.rewards, i)))
        return out
    if shape == "messages":
        p, r = _messages(rec[c.messages], i)
    else:
        p, r = _text(rec[c.prompt], c.prompt, i), _text(rec[c.response], c.response, i)
    _something(p, r, i)
    return [_row(p, r, "", _num(rec.get(c.label), c.label, i), _num(rec.get(c.reward), c.reward, i))]


def _winner(v: Any, col: str, i: int) -> tuple[str, str]:
    """(winning side, losing side) of an A/B record's winner value."""
    side = _WINNER_SIDE.get(str(v).strip().lower()) if isinstance(v, (str, int)) and not isinstance(v, bool) else None
    if side is None:
        raise BadRecord(f"record {i}: {col} must be 'a' or 'b', got {repr(v)[:40]} (model_a/model_b and 1/2 "
                        "also name a side); label the pair, or pass --skip-bad-rows to leave it out")
    return (side, "b" if side == "a" else "a")


def _label12(v: Any, col: str, i: int) -> bool:
    """True where an LLMBar label says output 1 is the better one, False for output 2."""
    if isinstance(v, bool) or str(v).strip() not in ("1", "2", "1.0", "2.0"):
        raise BadRecord(f"record {i}: {col} must be 1 or 2 (the better output), got {repr(v)[:40]}; fix the "
                        "record, or pass --skip-bad-rows to leave it out")
    return str(v).strip() in ("1", "1.0")


def _row(prompt: str, response: str, role: str, label: float | None, reward: float | None) -> dict[str, Any]:
    return {"prompt": prompt, "response": response, "prompt_id": 0, "response_index": 0,
            "role": role, "label": label, "reward": reward}
