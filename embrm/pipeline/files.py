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
