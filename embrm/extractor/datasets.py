"""Dataset readers and normalisers: any source -> a stream of (prompt, response) rows.

Sources: a local JSONL (optionally gzipped), JSON, Parquet or CSV file, a directory
written by ``datasets.save_to_disk``, or a hub dataset id. Records are read lazily and
can be iterated again (extraction reads the source twice: once to fingerprint, once to
write the rows table).

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
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zlib import error as zlib_error

from embrm.errors import EmbrmError

ASSISTANT = "\n\nAssistant:"
FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet", ".csv", ".csv.gz")


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


@dataclass(frozen=True)
class DatasetSpec:
    """What to read: a path or hub id, and how."""

    source: str
    split: str = "train"
    config: str | None = None
    revision: str | None = None
    limit: int | None = None
    columns: Columns = Columns()
    skip_bad_rows: bool = False  # skip (and count) records with a non-string text or nothing to embed

    def validate(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise EmbrmError("--limit must be a positive number of records")

    def display(self) -> dict[str, Any]:
        d: dict[str, Any] = {"source": self.source}
        if not _is_local(self.source):
            d.update(split=self.split, config=self.config, revision=self.revision)
        if self.limit:
            d["limit"] = self.limit
        return {k: v for k, v in d.items() if v is not None}

    @property
    def name(self) -> str:
        base = Path(self.source).name if _is_local(self.source) else self.source
        for suf in FILE_SUFFIXES:
            if base.endswith(suf):
                base = base[: -len(suf)]
                break
        if not _is_local(self.source):  # a hub id: its "/" becomes "--" (a name is one URL path segment)
            base = base.replace("/", "--") + f":{self.split}" + (f":{self.config}" if self.config else "")
        return base + (f"[:{self.limit}]" if self.limit else "")


def _is_local(source: str) -> bool:
    return Path(source).expanduser().exists() or source.endswith(FILE_SUFFIXES) or source.startswith((".", "/", "~"))


# ------------------------------------------------------------------------ readers
def iter_records(spec: DatasetSpec) -> Iterator[dict[str, Any]]:
    """Raw records of the source, lazily, honouring ``limit``."""
    it = _records(spec)
    for i, rec in enumerate(it):
        if spec.limit is not None and i >= spec.limit:
            return
        yield rec


def _records(spec: DatasetSpec) -> Iterator[dict[str, Any]]:
    src = spec.source
    p = Path(src).expanduser()
    if _is_local(src):
        if not p.exists():
            raise EmbrmError(f"dataset file {src} does not exist")
        if p.is_dir():
            yield from _saved_dataset(p, spec.split)
            return
        name = p.name.lower()
        if name.endswith((".jsonl", ".jsonl.gz")):
            yield from _jsonl(p)
        elif name.endswith((".json", ".json.gz")):
            yield from _json(p)
        elif name.endswith(".parquet"):
            yield from _parquet(p)
        elif name.endswith((".csv", ".csv.gz")):
            yield from _csv(p)
        else:
            raise EmbrmError(f"cannot read {p.name}: use a .jsonl, .json, .parquet or .csv file, "
                             "a save_to_disk directory, or a hub dataset id")
        return
    yield from _hub(spec)


def _open_text(p: Path) -> io.TextIOBase:
    if p.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8")
    return open(p, encoding="utf-8")


def _lines(p: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a text file, with the two ways a file fails to be UTF-8
    text (not gzip though named .gz; bytes that are not UTF-8) as one line that names the
    file and where."""
    n = 0
    try:
        with _open_text(p) as f:
            for n, line in enumerate(f, 1):  # noqa: B007 (n is read after the loop, in the error)
                yield n, line
    except (gzip.BadGzipFile, EOFError, zlib_error) as e:
        raise EmbrmError(f"{p.name} is not a whole gzip file ({e}); decompress it, or drop the .gz") from None
    except UnicodeDecodeError as e:
        raise EmbrmError(f"{p.name} is not UTF-8 text: byte 0x{e.object[e.start]:02x} near line {n + 1} "
                         f"({e.reason}); save it as UTF-8") from None


def _jsonl(p: Path) -> Iterator[dict[str, Any]]:
    for n, line in _lines(p):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise EmbrmError(f"{p.name} line {n} is not valid JSON ({e.msg}); fix or remove it") from None
        if not isinstance(rec, dict):
            raise EmbrmError(f"{p.name} line {n} is not a JSON object")
        yield rec


def _json(p: Path) -> Iterator[dict[str, Any]]:
    text = "".join(line for _, line in _lines(p))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise EmbrmError(f"{p.name} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if isinstance(data, dict):  # {"data": [...]} or column-oriented
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1 and all(isinstance(x, dict) for x in lists[0]):
            data = lists[0]
        elif lists and all(isinstance(v, list) for v in data.values()):
            data = [dict(zip(data, vals)) for vals in zip(*data.values())]
    if not isinstance(data, list):
        raise EmbrmError(f"{p.name} must hold a list of records")
    yield from data


def _parquet(p: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(p)
        for batch in f.iter_batches(batch_size=4096):
            yield from batch.to_pylist()
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise EmbrmError(f"{p.name} is not a readable Parquet file ({str(e).splitlines()[0][:200]})") from None


def _csv(p: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.csv as pcsv

    try:  # streamed: a batch at a time
        for batch in pcsv.open_csv(p):
            for rec in batch.to_pylist():
                for k, v in rec.items():  # list columns in CSV arrive as JSON text
                    if isinstance(v, str) and v[:1] == "[" and v[-1:] == "]":
                        try:
                            rec[k] = json.loads(v)
                        except json.JSONDecodeError:
                            pass
                yield rec
    except (OSError, ValueError) as e:  # not CSV, not UTF-8, not gzip (pyarrow's ArrowInvalid is a ValueError)
        raise EmbrmError(f"{p.name} is not a readable CSV file ({str(e).splitlines()[0][:200]})") from None


def _saved_dataset(p: Path, split: str) -> Iterator[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as e:
        raise EmbrmError(f"{p} is not a directory written by datasets.save_to_disk ({type(e).__name__})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise EmbrmError(f"split {split!r} is not in {p}; it has {', '.join(ds)}")
        ds = ds[split]
    yield from ds


def _hub(spec: DatasetSpec) -> Iterator[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(spec.source, spec.config, split=spec.split, revision=spec.revision)
    except Exception as e:
        raise EmbrmError(
            f"cannot load hub dataset {spec.source!r} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "check the id, --split and --config, or pass a local file"
        ) from None
    yield from ds


# -------------------------------------------------------------------- normalising
#: The columns of a two-prompt pair (``embrm active select`` writes them).
PAIR2 = ("prompt_a", "response_a", "prompt_b", "response_b")
WINNER = "winner"


def detect_shape(rec: dict[str, Any], c: Columns) -> str:
    keys = set(rec)
    if c.messages in keys:
        return "messages"
    if set(PAIR2) <= keys:
        if WINNER not in keys:
            raise EmbrmError(f"a two-prompt pair file needs a {WINNER!r} column ('a' or 'b'); its columns are "
                             f"{sorted(keys)}")
        return "pair2"
    if {c.chosen, c.rejected} <= keys:
        return "pairwise" if c.prompt in keys else "hh"
    if c.prompt in keys and c.responses in keys:
        return "multi"
    if {c.prompt, c.response} <= keys:
        return "pointwise"
    raise EmbrmError(
        f"cannot tell the dataset's shape from its columns {sorted(keys)}: expected "
        f"({c.prompt}, {c.chosen}, {c.rejected}), ({c.chosen}, {c.rejected}) transcripts, "
        f"({c.prompt}, {c.responses}), ({c.prompt}, {c.response}) or {c.messages}; "
        "map your names with --prompt-col, --chosen-col, ..."
    )


KIND_OF_SHAPE = {"pairwise": "pairwise", "hh": "pairwise", "pair2": "pairwise", "multi": "multi",
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
        won = rec[WINNER].strip().lower() if isinstance(rec[WINNER], str) else rec[WINNER]
        if won not in ("a", "b"):
            raise BadRecord(f"record {i}: {WINNER} must be 'a' or 'b', got {rec[WINNER]!r}; label the pair, or "
                            "pass --skip-bad-rows to leave unlabelled pairs out")
        win, lose = ("a", "b") if won == "a" else ("b", "a")
        pw, rw_, pl, rl = (_text(rec[f"{col}_{side}"], f"{col}_{side}", i)
                           for side in (win, lose) for col in ("prompt", "response"))
        _something(pw, rw_, i)
        _something(pl, rl, i)
        return [_row(pw, rw_, "chosen", 1.0, None), _row(pl, rl, "rejected", 0.0, None)]
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


def _row(prompt: str, response: str, role: str, label: float | None, reward: float | None) -> dict[str, Any]:
    return {"prompt": prompt, "response": response, "prompt_id": 0, "response_index": 0,
            "role": role, "label": label, "reward": reward}


def iter_rows(spec: DatasetSpec, stats: dict[str, int] | None = None) -> Iterator[dict[str, Any]]:
    return normalise(iter_records(spec), spec.columns, spec.skip_bad_rows, stats)


def dataset_kind(spec: DatasetSpec) -> str:
    first = next(iter_records(spec), None)
    if first is None:
        raise EmbrmError(f"dataset {spec.source} has no records")
    return KIND_OF_SHAPE[detect_shape(first, spec.columns)]
