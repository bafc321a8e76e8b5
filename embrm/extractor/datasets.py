"""Dataset readers: any source -> a lazy stream of records, and of embrm's rows.

Sources: a local JSONL (optionally gzipped), JSON, Parquet or CSV file, a directory
written by ``datasets.save_to_disk``, or a hub dataset id. Records are read lazily and
can be iterated again (extraction reads the source twice: once to fingerprint, once to
write the rows table). A file that cannot be read (not UTF-8, not gzip though named so,
not JSON, not Parquet) is one line naming it and where.

Which shape the records have (pairwise, HH-RLHF, two-prompt pairs, multi, pointwise,
messages) and how a record becomes rows is :mod:`embrm.extractor.shapes`.
"""
from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zlib import error as zlib_error

from embrm.errors import EmbrmError
from embrm.extractor.shapes import KIND_OF_SHAPE, Columns, detect_shape, normalise

FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet", ".csv", ".csv.gz")


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


def iter_rows(spec: DatasetSpec, stats: dict[str, int] | None = None) -> Iterator[dict[str, Any]]:
    return normalise(iter_records(spec), spec.columns, spec.skip_bad_rows, stats)


def dataset_kind(spec: DatasetSpec) -> str:
    first = next(iter_records(spec), None)
    if first is None:
        raise EmbrmError(f"dataset {spec.source} has no records")
    return KIND_OF_SHAPE[detect_shape(first, spec.columns)]


__all__ = ["FILE_SUFFIXES", "Columns", "DatasetSpec", "dataset_kind", "iter_records", "iter_rows"]
