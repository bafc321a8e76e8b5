"""Published reward models: trained runs kept in the store beside the embeddings they
were trained on, so a team shares them as it shares vectors.

One Lance table, ``rm_runs``: a row per published name with the run's summary (method,
members, embedding fingerprint, training entry, metrics) and its files as binary
values. A push is one commit, checked first by :func:`embrm.runformat.check_files`, so a
run is there whole or not at all, and a name is replaced only when asked to (``force``).
Weights travel as the bytes the trainer wrote (safetensors), never as pickle.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa

from embrm import runformat
from embrm.errors import EmbrmError
from embrm.store.catalog import now
from embrm.store.tables import Tables, merge, sql_str

TABLE = "rm_runs"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SCHEMA = pa.schema([
    pa.field("name", pa.string(), nullable=False, metadata={"lance-schema:unenforced-primary-key": "true"}),
    ("summary", pa.string()),  # JSON: runformat.summary
    ("pushed_at", pa.string()),
    ("files", pa.list_(pa.struct([("name", pa.string()), ("sha256", pa.string()), ("data", pa.large_binary())]))),
])
META_COLUMNS = ["name", "summary", "pushed_at"]


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        shown = repr(name)[:70]
        raise EmbrmError(f"reward-model name {shown} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return name


class RunRegistry:
    """The published runs of one store."""

    def __init__(self, tables: Tables, where: str):
        self.tables, self.where = tables, where

    def tables_used(self) -> set[str]:
        return {TABLE}

    def version(self) -> int | None:
        """The registry table's version (None before the first push): what a server
        watches to pick up new runs."""
        ds = self.tables.open(TABLE)
        return None if ds is None else ds.version

    def push(self, name: str, run_dir: Path, force: bool = False) -> dict[str, Any]:
        """Publish the run directory ``run_dir`` under ``name``."""
        return self.push_files(name, runformat.read_files(run_dir), force)

    def push_files(self, name: str, files: dict[str, Any], force: bool = False, consume: bool = False
                   ) -> dict[str, Any]:
        """Publish a run given as ``{file name: bytes}`` (checked first, one commit).

        With ``consume`` the dict is emptied once its bytes are copied into the row, so
        that buffers of a memory-mapped upload are unmapped before the write. A new name
        on a store whose commits are exclusive under the lock is an append (measured: a
        200 MB run's ``merge_insert`` peaked 600 MB above the row, an append 370 MB)."""
        check_name(name)
        cfg = runformat.check_files(files, f"run {name}")
        metrics = json.loads(bytes(files[runformat.METRICS])) if runformat.METRICS in files else None
        summary = runformat.summary(name, cfg, metrics)
        pushed_at = now()
        data = _row(name, json.dumps(summary), pushed_at, files)
        if consume:
            files.clear()
        self.tables.create(TABLE, SCHEMA)
        with self.tables.lock(TABLE):
            exists = self.has(name)
            if exists and not force:
                raise EmbrmError(f"a reward model named {name!r} is already published in {self.where}; "
                                 "pick another name, or pass --force to replace it")
            if not exists and self.tables.exclusive_commits:
                self.tables.append(TABLE, data.cast(self.tables.get(TABLE).schema))
            else:
                merge(self.tables.get(TABLE), "name", data, update=True)
        return {**summary, "pushed_at": pushed_at}

    def _rows(self, names: list[str] | None, columns: list[str]) -> list[dict[str, Any]]:
        ds = self.tables.open(TABLE)
        if ds is None:
            return []
        filt = None if names is None else f"name IN ({','.join(sql_str(n) for n in names)})"
        return ds.to_table(columns=columns, filter=filt).to_pylist()

    def has(self, name: str) -> bool:
        return bool(self._rows([check_name(name)], ["name"]))

    def list(self) -> list[dict[str, Any]]:
        """Every published run's summary, by name (the files are not read)."""
        return sorted(({**json.loads(r["summary"]), "pushed_at": r["pushed_at"]}
                       for r in self._rows(None, META_COLUMNS)), key=lambda d: d["name"])

    def files(self, name: str) -> dict[str, bytes]:
        """A published run's files, each checked against the hash recorded at push."""
        check_name(name)
        rows = self._rows([name], ["name", "files"])
        if not rows:
            known = ", ".join(r["name"] for r in self.list()) or "none"
            raise EmbrmError(f"no reward model named {name!r} in {self.where} (published: {known}); "
                             "`embrm rm ls` lists them")
        out: dict[str, bytes] = {}
        for f in rows[0]["files"]:
            if hashlib.sha256(f["data"]).hexdigest() != f["sha256"]:
                raise EmbrmError(f"file {f['name']} of reward model {name!r} does not match its recorded hash")
            out[f["name"]] = f["data"]
        return out

    def pull(self, name: str, out: Path) -> Path:
        """Write a published run into the new (or empty) directory ``out``."""
        return write_run(self.files(name), out)


def _row(name: str, summary: str, pushed_at: str, files: dict[str, Any]) -> pa.Table:
    """The registry row of a run; ``files`` may be bytes or buffers (an upload's memory map),
    copied once, into the row."""
    names = sorted(files)
    entries = pa.StructArray.from_arrays(
        [pa.array(names, pa.string()), pa.array([hashlib.sha256(files[n]).hexdigest() for n in names], pa.string()),
         _binary([files[n] for n in names])],
        fields=list(SCHEMA.field("files").type.value_type))
    return pa.table({"name": [name], "summary": [summary], "pushed_at": [pushed_at],
                     "files": pa.ListArray.from_arrays(pa.array([0, len(names)], pa.int32()), entries)},
                    schema=SCHEMA)


def _binary(values: list[Any]) -> pa.Array:
    """A large_binary array of ``values`` (bytes or buffers), copied once into one buffer.
    Not ``pa.array`` of memoryviews: that was measured to keep every copy alive (200 MB
    more resident after each 200 MB push)."""
    import numpy as np

    offsets = np.zeros(len(values) + 1, np.int64)
    offsets[1:] = np.cumsum([len(v) for v in values])
    data = pa.allocate_buffer(int(offsets[-1]))
    dst = np.frombuffer(data, np.uint8)
    for v, at in zip(values, offsets[:-1].tolist()):
        dst[at:at + len(v)] = np.frombuffer(v, np.uint8)
    return pa.Array.from_buffers(pa.large_binary(), len(values), [None, pa.py_buffer(offsets.tobytes()), data])


def write_run(files: dict[str, bytes], out: Path) -> Path:
    """Write a run's checked files into directory ``out``, whole or not at all: into a
    temporary directory beside it first, then renamed. ``out`` must not hold anything."""
    runformat.check_files(files, str(out))
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EmbrmError(f"{out} already exists and is not an empty directory; pass a new --out")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    except OSError as e:
        raise EmbrmError(f"cannot write the run to {out} ({e.strerror or type(e).__name__}); pass an --out in a "
                         "writable directory") from None
    try:
        for n, b in files.items():
            (tmp / n).write_bytes(b)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except OSError as e:
        raise EmbrmError(f"cannot write the run to {out} ({e.strerror or type(e).__name__}); nothing was written"
                         ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
