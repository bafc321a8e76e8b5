"""Reading and atomically writing the pipeline's dataset files (JSONL or Parquet)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from embrm.errors import EmbrmError


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every record of a local dataset file, through the extractor's readers."""
    from embrm.extractor.datasets import DatasetSpec, iter_records

    return list(iter_records(DatasetSpec(str(path))))


def write_records(path: Path, records: list[dict[str, Any]]) -> Path:
    """Write JSONL or Parquet (by suffix) via a temporary file and a rename, so a
    reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if path.suffix == ".jsonl":
        with open(tmp, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), tmp)
    else:
        raise EmbrmError(f"cannot write {path.name}: use a .jsonl or .parquet file name")
    os.replace(tmp, path)
    return path


class PartialFile:
    """Resumable progress beside an output file: one JSON object a line, appended and
    flushed as each unit of work finishes, so a killed run picks up where it stopped.

    A line cut short by a kill is ignored when read back. :meth:`finish` writes the
    final file atomically and removes the progress file.
    """

    def __init__(self, out: Path, tag: str):
        self.out = Path(out)
        self.path = self.out.with_name(f"{self.out.name}.{tag}.partial.jsonl" if tag else
                                       f"{self.out.name}.partial.jsonl")
        self._f: Any = None

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def append(self, records: list[dict[str, Any]]) -> None:
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8")
        for r in records:
            self._f.write(json.dumps(r, ensure_ascii=False) + "\n")
        self._f.flush()

    def finish(self, records: list[dict[str, Any]]) -> Path:
        self.close()
        path = write_records(self.out, records)
        self.path.unlink(missing_ok=True)
        return path

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
