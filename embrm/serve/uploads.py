"""Uploads (``PUT /v1/datasets``, ``PUT /v1/rms/{name}``): hostile bytes in, checked data
out, and nothing written before everything is checked.

* :func:`body_to_file` streams a body to a temporary file with a running byte count and
  the service's timeouts: memory stays bounded whatever the size, and a body over the
  limit is a 413 the moment it crosses it.
* :func:`checked_rows` reads the file as an Arrow IPC stream (memory-mapped, a record
  batch at a time) and refuses, with one line naming the problem, anything that is not
  the normalised row schema: a stream cut short or not Arrow at all, a column missing or
  of another type, invalid UTF-8, a null where text or an id is needed, a row with
  nothing to embed, a non-finite label or reward, rows that do not make the kind claimed.
* :func:`store_upload` fingerprints the checked rows exactly as a local extraction does
  (:func:`~embrm.extractor.plan.scan_rows`), compares the hash the client expects, and
  only then writes the rows table.
"""
from __future__ import annotations

import asyncio
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from starlette.requests import ClientDisconnect

from embrm.errors import EmbrmError
from embrm.serve.errors import ApiError
from embrm.serve.memory import release_memory
from embrm.store import schema as S
from embrm.store.catalog import check_dataset_name

if TYPE_CHECKING:
    from fastapi import Request

    from embrm.serve.settings import Settings
    from embrm.store.base import Store

TEXT, IDS = ("prompt", "response"), ("prompt_id", "response_index")
SLICE = 1024  # rows made into Python objects at a time
CONTINUATION = b"\xff\xff\xff\xff"


async def body_to_file(request: Request, settings: Settings, directory: str | None = None) -> Path:
    """Stream the request body into a new temporary file; the caller deletes it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.body_timeout
    fd, name = tempfile.mkstemp(prefix="embrm-upload-", dir=directory)
    size = 0
    try:
        with os.fdopen(fd, "wb") as f:
            stream = request.stream().__aiter__()
            while True:
                wait = min(settings.body_idle_timeout, deadline - loop.time())
                try:
                    if wait <= 0:
                        raise TimeoutError
                    chunk = await asyncio.wait_for(stream.__anext__(), wait)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise ApiError(408, f"the body did not arrive in time (at most {settings.body_idle_timeout:g} s "
                                        f"between pieces, {settings.body_timeout:g} s in all)", None, "body_timeout",
                                   {"connection": "close"}) from None
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise ApiError(413, f"the body is over {settings.max_upload_bytes} bytes; send less per request",
                                   None, "body_too_large", {"connection": "close"})
                f.write(chunk)
    except ClientDisconnect:
        os.unlink(name)
        raise ApiError(400, "the client went away before the body was complete", None, "incomplete_body") from None
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def _stream(path: Path) -> pa.ipc.RecordBatchStreamReader:
    with open(path, "rb") as f:
        if f.read(4) != CONTINUATION:  # every message of an Arrow IPC stream starts with it
            raise EmbrmError("the body is not an Arrow IPC stream; send the rows as one, in the upload schema")
    try:
        return pa.ipc.open_stream(pa.memory_map(str(path)))
    except (pa.ArrowInvalid, OSError) as e:
        raise EmbrmError(f"the Arrow stream is cut short or damaged ({_first_line(e)}); send the whole stream") \
            from None


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:200]


def checked_rows(path: Path, kind: str) -> Iterator[pa.RecordBatch]:
    """The uploaded rows, a record batch at a time, each checked and cast to the upload
    schema; raises :class:`EmbrmError` naming the first problem (row numbers count from 0).
    Whatever else Arrow finds wrong with the bytes (a type it cannot read, a damaged
    buffer) is such an error too, never a server error."""
    try:
        yield from _checked_rows(path, kind)
    except EmbrmError:
        raise
    except (pa.ArrowException, OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise EmbrmError(f"the rows could not be read as the upload schema ({type(e).__name__}: "
                         f"{_first_line(e)})") from None


def _checked_rows(path: Path, kind: str) -> Iterator[pa.RecordBatch]:
    reader = _stream(path)
    missing = [n for n in S.UPLOAD_SCHEMA.names if n not in reader.schema.names]
    if missing:
        raise EmbrmError(f"the rows lack the column(s) {missing}; the upload schema is {S.UPLOAD_SCHEMA.names}")
    at = 0
    carry: pa.RecordBatch | None = None  # a pair's first row, when a batch ends between the two
    while True:
        start = at + (0 if carry is None else carry.num_rows)  # the row number of this batch's first row
        try:
            raw = reader.read_next_batch()
        except StopIteration:
            break
        except (pa.ArrowInvalid, OSError) as e:
            raise EmbrmError(f"the Arrow stream is cut short or damaged after row {start} ({_first_line(e)})") \
                from None
        try:
            raw.validate(full=True)  # invalid UTF-8, offsets out of bounds
        except pa.ArrowInvalid as e:
            raise EmbrmError(f"rows {start}-{start + raw.num_rows - 1} are not valid Arrow data ({_first_line(e)}); "
                             "text must be UTF-8") from None
        b = _cast(raw.select(S.UPLOAD_SCHEMA.names), start)
        _check_values(b, start)
        if kind == "pairwise":
            if carry is not None:
                b = pa.concat_batches([carry, b])
            carry, b = (b.slice(b.num_rows - 1), b.slice(0, b.num_rows - 1)) if b.num_rows % 2 else (None, b)
            _check_pairs(b, at)
        else:
            _check_no_role(b, at, kind)
        at += b.num_rows
        if b.num_rows:
            yield b
    if carry is not None:
        raise EmbrmError(f"a pairwise dataset has an even number of rows (chosen, rejected); row {at} has no partner")
    if at == 0:
        raise EmbrmError("the upload holds no rows")


def _cast(b: pa.RecordBatch, at: int) -> pa.RecordBatch:
    for f in S.UPLOAD_SCHEMA:
        have = b.schema.field(f.name).type
        if have != f.type:
            try:
                b = b.set_column(b.schema.get_field_index(f.name), f.name, b.column(f.name).cast(f.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                raise EmbrmError(f"column {f.name} holds {have} from row {at}, which does not convert to {f.type}") \
                    from None
    return b.cast(S.UPLOAD_SCHEMA)


def _check_values(b: pa.RecordBatch, at: int) -> None:
    for name in (*TEXT, *IDS, "role"):
        col = b.column(name)
        if col.null_count:
            i = pc.index(pc.is_null(col), True).as_py()
            raise EmbrmError(f"row {at + i} has no {name} (null); every row needs its {name}")
    empty = pc.and_(pc.equal(pc.utf8_length(b.column("prompt")), 0), pc.equal(pc.utf8_length(b.column("response")), 0))
    if pc.any(empty).as_py():
        i = pc.index(empty, True).as_py()
        raise EmbrmError(f"row {at + i} has neither prompt nor response: nothing to embed")
    for name in ("label", "reward"):
        vals = b.column(name).to_pylist()
        bad = next((i for i, v in enumerate(vals) if v is not None and not math.isfinite(v)), None)
        if bad is not None:
            raise EmbrmError(f"row {at + bad} has {name} {vals[bad]}; give a finite number or null")
    for name in IDS:
        if pc.any(pc.less(b.column(name), 0)).as_py():
            raise EmbrmError(f"{name} must not be negative (rows {at}-{at + b.num_rows - 1})")


def _check_pairs(b: pa.RecordBatch, at: int) -> None:
    roles = b.column("role").to_pylist()
    for i in range(0, len(roles) - 1, 2):
        if {roles[i], roles[i + 1]} != {"chosen", "rejected"}:
            raise EmbrmError(f"rows {at + i} and {at + i + 1} are not a (chosen, rejected) pair "
                             f"(roles {roles[i]!r}, {roles[i + 1]!r}); a pairwise dataset is such pairs in order")


def _check_no_role(b: pa.RecordBatch, at: int, kind: str) -> None:
    roles = b.column("role")
    has = pc.not_equal(roles, "")
    if pc.any(has).as_py():
        i = pc.index(has, True).as_py()
        raise EmbrmError(f"row {at + i} has role {roles[i].as_py()!r}, which a {kind} dataset does not have; "
                         "upload it as pairwise")


def store_upload(store: Store, path: Path, name: str, kind: str, expected: str | None) -> dict[str, Any]:
    """Check, fingerprint and compare, then store the uploaded rows (see the module docstring).

    Rows become Python objects only ``SLICE`` at a time, for the fingerprint; the rows
    table is written from the Arrow batches themselves, with the item keys the
    fingerprinting pass computed, so an upload's memory is bounded by a slice, not by
    its size.
    """
    from embrm.extractor.plan import scan_rows

    check_dataset_name(name)
    if kind not in S.KINDS:
        raise EmbrmError(f"kind {kind!r} is unknown; use one of {', '.join(S.KINDS)}")

    def rows() -> Iterator[dict[str, Any]]:
        for b in checked_rows(path, kind):
            for s in range(0, b.num_rows, SLICE):
                yield from b.slice(s, SLICE).to_pylist()

    try:
        scan = scan_rows(rows, name, {"source": "upload"}, kind)  # reads and checks everything once
        if expected is not None and scan.dataset_hash != expected.lower():
            raise ApiError(400, f"the rows hash to {scan.dataset_hash[:12]}, not {expected[:12]}: the client and "
                                "server normalised differently, or the upload was damaged; nothing was stored",
                           "dataset_hash", "hash_mismatch")

        def batches() -> Iterator[pa.RecordBatch]:
            at = 0
            for b in checked_rows(path, kind):
                t = pa.Table.from_batches([b])
                t = t.append_column("position", pa.array(range(at, at + b.num_rows), pa.int64()))
                yield from t.append_column("item_key", scan.keys.slice(at, b.num_rows)).to_batches()
                at += b.num_rows

        store.write_rows(scan.dataset_hash, batches(), scan.n_rows, kind)
    finally:
        release_memory()
    return {"dataset_hash": scan.dataset_hash, "rows": scan.n_rows, "name": name, "kind": kind}
