"""A store read through ``embrm serve``, for CPU trainers on other machines.

``--store http://host:port`` on ``store ls/show/export``, ``train``, ``eval`` and
``score`` gives a :class:`RemoteStore`: the catalog as JSON, entries as Arrow streams
that go straight from the HTTP response into pyarrow's IPC reader (a Python loop over
the bytes was measured 3-4x slower). Nothing here imports torch or transformers, so a
trainer's laptop needs neither the extractor's weight nor a GPU to read the team's cache.

``embrm extract --server`` also lives here: it normalises and fingerprints the dataset
with the same readers as a local extraction, uploads the rows, starts the entry as a job
on the server and follows it to the end.
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from embrm.errors import EmbrmError
from embrm.serve.wire import ENTRY_KEY, ROW_COLUMNS, upload_batches
from embrm.store.cache import Materialised
from embrm.store.loader import Embeddings, EntryBatch, embeddings_of
from embrm.store.store import Entry

ARROW = "application/vnd.apache.arrow.stream"


class RemoteStore:
    """The read side of :class:`~embrm.store.store.Store`, over HTTP."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 300.0):
        self.uri = url.rstrip("/")
        self.token = token if token is not None else os.environ.get("EMBRM_TOKEN")
        self.timeout = timeout

    # ---------------------------------------------------------------- http
    def _open(self, method: str, path: str, params: dict[str, Any] | None = None, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> Any:
        q = {k: str(v).lower() if isinstance(v, bool) else v for k, v in (params or {}).items() if v is not None}
        url = f"{self.uri}{path}" + (f"?{urllib.parse.urlencode(q)}" if q else "")
        h = dict(headers or {})
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=body, method=method, headers=h)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            try:
                msg = json.loads(e.read())["error"]["message"]
            except Exception:
                msg = f"HTTP {e.code} {e.reason}"
            raise EmbrmError(f"{self.uri}: {msg}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise EmbrmError(f"cannot reach the embrm service at {self.uri} ({reason}); is `embrm serve` "
                             "running there?") from None

    def _json(self, method: str, path: str, payload: Any = None, params: dict[str, Any] | None = None) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        with self._open(method, path, params, body, {"Content-Type": "application/json"} if body else None) as r:
            return json.loads(r.read())

    # -------------------------------------------------------------- catalog
    def info(self) -> dict[str, Any]:
        return self._json("GET", "/v1/info")

    def entries(self) -> list[Entry]:
        return [Entry.from_summary(d) for d in self._json("GET", "/v1/entries")["data"]]

    def resolve(self, model: str, dataset: str) -> Entry:
        path = f"/v1/entries/{urllib.parse.quote(model, safe='')}/{urllib.parse.quote(dataset, safe='')}"
        return Entry.from_summary(self._json("GET", path)["entry"])

    def delete(self, model: str, dataset: str) -> Entry:
        raise EmbrmError("entries are removed on the service's machine: run `embrm store rm` there")

    def gc(self) -> dict[str, int]:
        raise EmbrmError("gc runs on the service's machine: run `embrm store gc` there")

    # --------------------------------------------------------------- entries
    def _stream(self, e: Entry, layer: int | None, allow_partial: bool, offset: int = 0, limit: int | None = None,
                texts: bool = False) -> Any:
        path = f"/v1/entries/{e.model_hash}/{e.dataset_hash}/vectors"
        return self._open("GET", path, {"layer": layer, "offset": offset or None, "limit": limit,
                                        "partial": allow_partial or None, "texts": texts or None},
                          headers={"Accept": ARROW})

    def iter_entry(self, model: str, dataset: str, layer: int | None = None, batch_size: int = 8192,
                   columns: list[str] | None = None, allow_partial: bool = False, offset: int = 0,
                   limit: int | None = None) -> Iterator[EntryBatch]:
        """An entry in dataset order, a batch at a time, as it arrives."""
        e = self.resolve(model, dataset)
        texts = bool(columns and {"prompt", "response"} & set(columns))
        with self._stream(e, layer, allow_partial, offset, limit, texts) as resp:
            for b in pa.ipc.open_stream(resp):
                yield _entry_batch(b, e.dim)

    def load(self, model: str, dataset: str, layer: int | None = None, allow_partial: bool = False,
             **_: Any) -> Embeddings:
        """The whole entry in memory, as :meth:`Store.load` gives it."""
        e = self.resolve(model, dataset)
        with self._stream(e, layer, allow_partial) as resp:
            reader = pa.ipc.open_stream(resp)
            table = reader.read_all()
        meta = Entry.from_summary(json.loads(table.schema.metadata[ENTRY_KEY]))
        vec = table.column("vector").combine_chunks()
        flat = vec.flatten().to_numpy(zero_copy_only=False)
        m = Materialised(flat.reshape(len(table), meta.dim), table.column("n_tokens").to_numpy(),
                         table.column("truncated").to_numpy(zero_copy_only=False), np.ones(len(table), bool))
        return embeddings_of(table, m, meta, layer if layer is not None else meta.layers[0])

    # ------------------------------------------------------------ extraction
    def upload(self, rows: Iterator[dict[str, Any]], dataset_hash: str, name: str) -> dict[str, Any]:
        """PUT the normalised rows; the server recomputes the hash and refuses a mismatch."""
        from embrm.store import schema as S

        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, S.UPLOAD_SCHEMA) as w:
            for b in upload_batches(rows):
                w.write_batch(b)
        with self._open("PUT", "/v1/datasets", {"name": name, "dataset_hash": dataset_hash},
                        sink.getvalue().to_pybytes(), {"Content-Type": ARROW}) as r:
            return json.loads(r.read())

    def start_entry(self, dataset_hash: str, name: str, kind: str, source: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", "/v1/entries", {"dataset": dataset_hash, "name": name, "kind": kind,
                                                  "source": source})

    def entry_status(self, model_hash: str, dataset_hash: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/entries/{model_hash}/{dataset_hash}")


def _entry_batch(b: pa.RecordBatch, dim: int) -> EntryBatch:
    rows = b.select([n for n in b.schema.names if n in ROW_COLUMNS or n in ("prompt", "response")])
    flat = b.column("vector").flatten().to_numpy(zero_copy_only=False)
    return EntryBatch(rows, flat.reshape(len(b), dim), b.column("n_tokens").to_numpy(),
                      b.column("truncated").to_numpy(zero_copy_only=False))


def extract_remote(url: str, cfg: Any, poll_seconds: float = 0.5) -> Any:
    """``embrm extract --server URL``: the same scan and report as a local extraction,
    with the forward passes on the server. Returns an ``ExtractResult``."""
    from embrm.extractor.extraction import ExtractResult, progress_bar
    from embrm.extractor.plan import scan_dataset

    t0 = time.perf_counter()
    client = RemoteStore(url)
    info = client.info()
    data = scan_dataset(cfg.data)
    up = client.upload(data.rows(), data.dataset_hash, data.name)
    if up["dataset_hash"] != data.dataset_hash:
        raise EmbrmError("the server fingerprinted the rows differently; are client and server the same embrm?")
    started = client.start_entry(data.dataset_hash, data.name, data.kind, data.source)
    bar = progress_bar(data.n_rows, "extract (server)", cfg.run.quiet)
    seen = 0
    job = started.get("job")
    try:
        while job is not None and job["status"] == "running":
            time.sleep(poll_seconds)
            job = client.entry_status(info["model_hash"], data.dataset_hash)["job"] or job
            if bar is not None:
                bar.update(job["done_rows"] - seen)
                seen = job["done_rows"]
    finally:
        if bar is not None:
            bar.close()
    if job is not None and job["status"] == "failed":
        raise EmbrmError(f"the server's job failed: {job['error']}")
    e = client.resolve(info["model_hash"], data.dataset_hash)
    j = job or {}
    return ExtractResult(e.model_name, e.model_hash, data.name, data.dataset_hash, data.kind, data.n_rows,
                         j.get("computed", 0), j.get("cached", data.n_rows if job is None else 0), data.skipped,
                         j.get("duplicates", 0), e.truncated, j.get("tokens", 0), time.perf_counter() - t0,
                         j.get("compute_seconds", 0.0), bool(j.get("computed")), e.status)
