"""A store reached through ``embrm serve`` (``--store http://host:port``), for CPU trainers
on other machines.

:class:`ServiceStore` answers the same interface as a local store: the catalog as JSON,
entries as Arrow streams that go straight from the HTTP response into pyarrow's IPC
reader (a Python loop over the bytes was measured 3-4x slower), entries removed and
``gc`` run on the service's machine, reward models pushed and pulled. Nothing here
imports torch or transformers, so a trainer's laptop needs neither the extractor's
weight nor a GPU to read the team's cache. Tokens come from ``$EMBRM_TOKEN``.
"""
from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from embrm import runformat
from embrm.errors import EmbrmError
from embrm.store import schema as S
from embrm.store.base import Store
from embrm.store.cache import Materialised
from embrm.store.catalog import Entry
from embrm.store.loader import embeddings_of
from embrm.store.location import SERVICE
from embrm.store.registry import check_name, write_run
from embrm.store.vectors import VectorInfo
from embrm.store.wire import ARROW, ENTRY_KEY, entry_batch, run_files_ipc, run_files_of, to_ipc, upload_batches

if TYPE_CHECKING:
    from embrm.store.loader import Embeddings, EntryBatch


class HttpClient:
    """Requests to one ``embrm serve``: bearer token, JSON errors as one-line
    :class:`EmbrmError`, an unreachable server named as such."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 300.0):
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get("EMBRM_TOKEN")
        self.timeout = timeout

    def open(self, method: str, path: str, params: dict[str, Any] | None = None, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> Any:
        q = {k: str(v).lower() if isinstance(v, bool) else v for k, v in (params or {}).items() if v is not None}
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(q)}" if q else "")
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
            raise EmbrmError(f"{self.url}: {msg}") from None
        except http.client.HTTPException as e:  # the server went away after the request reached it
            raise EmbrmError(f"{self.url} closed the connection without answering {method} {path} "
                             f"({type(e).__name__}); a change it asked for may or may not be made: look, or "
                             "rerun it (every change is one commit, so a rerun is safe)") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise EmbrmError(f"cannot reach the embrm service at {self.url} ({reason}); is `embrm serve` "
                             "running there?") from None

    def json(self, method: str, path: str, payload: Any = None, params: dict[str, Any] | None = None) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        with self.open(method, path, params, body, {"Content-Type": "application/json"} if body else None) as r:
            return json.loads(self.read(r, f"{method} {path}"))

    def read(self, r: Any, what: str, after: str = "") -> bytes:
        """A response's whole body, or one line saying the server went away mid-answer
        (``after``: what that means for the request, e.g. whether a rerun is safe)."""
        try:
            return r.read()
        except (http.client.HTTPException, OSError) as e:
            raise EmbrmError(f"{self.url} closed the connection before its answer to {what} was complete "
                             f"({type(e).__name__}){after}") from None


def _q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


class ServiceStore(Store):
    """The store of an ``embrm serve`` process, over HTTP."""

    backend: ClassVar[str] = SERVICE

    def __init__(self, url: str, token: str | None = None, timeout: float = 300.0):
        self.http = HttpClient(url, token, timeout)
        self.uri = self.http.url

    def info(self) -> dict[str, Any]:
        """The served model: name, hash, dim, layers, ... (``GET /v1/info``)."""
        return self.http.json("GET", "/v1/info")

    # -------------------------------------------------------------- catalog
    def entries(self) -> list[Entry]:
        return [Entry.from_summary(d) for d in self.http.json("GET", "/v1/entries")["data"]]

    def resolve(self, model: str, dataset: str) -> Entry:
        return Entry.from_summary(self.http.json("GET", f"/v1/entries/{_q(model)}/{_q(dataset)}")["entry"])

    # ---------------------------------------------------------------- reads
    def _stream(self, e: Entry, layer: int | None, allow_partial: bool, offset: int = 0, limit: int | None = None,
                texts: bool = False) -> Any:
        path = f"/v1/entries/{e.model_hash}/{e.dataset_hash}/vectors"
        return self.http.open("GET", path, {"layer": layer, "offset": offset or None, "limit": limit,
                                            "partial": allow_partial or None, "texts": texts or None},
                              headers={"Accept": ARROW})

    def iter_entry(self, model: str, dataset: str, layer: int | None = None, batch_size: int = 8192,
                   columns: list[str] | None = None, allow_partial: bool = False, offset: int = 0,
                   limit: int | None = None) -> Iterator[EntryBatch]:
        """An entry in dataset order, a batch at a time, as it arrives (the server's
        batches; ``batch_size`` is the local reader's and has no effect here)."""
        e = self.resolve(model, dataset)
        texts = bool(columns and set(S.TEXT_COLUMNS) & set(columns))
        with self._stream(e, layer, allow_partial, offset, limit, texts) as resp:
            for b in pa.ipc.open_stream(resp):
                yield entry_batch(b, e.dim)

    def load(self, model: str, dataset: str, layer: int | None = None, *, mmap: bool = False,
             allow_partial: bool = False, use_cache: bool | None = None) -> Embeddings:
        """The whole entry in memory, as a local load gives it (``use_cache`` has no effect:
        nothing of a service's entry is kept on this machine)."""
        if mmap:
            self.refuse("a memory-mapped load", "export the entry to .npy with `embrm store export` and map that")
        e = self.resolve(model, dataset)
        with self._stream(e, layer, allow_partial) as resp:
            table = pa.ipc.open_stream(resp).read_all()
        meta = Entry.from_summary(json.loads(table.schema.metadata[ENTRY_KEY]))
        flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        m = Materialised(flat.reshape(len(table), meta.dim), table.column("n_tokens").to_numpy(),
                         table.column("truncated").to_numpy(zero_copy_only=False), np.ones(len(table), bool))
        return embeddings_of(table, m, meta, layer if layer is not None else meta.layers[0])

    # -------------------------------------------------------------- changes
    def delete(self, model: str, dataset: str) -> Entry:
        """Remove the entry on the service's store (needs a token where the service has tokens)."""
        return Entry.from_summary(self.http.json("DELETE", f"/v1/entries/{_q(model)}/{_q(dataset)}")["entry"])

    def gc(self) -> dict[str, int]:
        """Run ``gc`` on the service's machine (it pauses its own writes meanwhile)."""
        return self.http.json("POST", "/v1/gc", {})

    # -------------------------------------------------------- reward models
    def push_run(self, name: str, run_dir: Path, force: bool = False) -> dict[str, Any]:
        files = runformat.read_files(run_dir)
        with self.http.open("PUT", f"/v1/rms/{_q(check_name(name))}", {"force": force or None}, run_files_ipc(files),
                            {"Content-Type": ARROW}) as r:
            return json.loads(self.http.read(r, f"the push of {name}", (
                f"; the run may or may not be published: `embrm rm ls --store {self.uri}` shows it, and pushing "
                "again is safe (a push is one commit: the run is there whole or not at all; add --force if it is "
                "there)")))

    def runs(self) -> list[dict[str, Any]]:
        return self.http.json("GET", "/v1/rms")["data"]

    def pull_run(self, name: str, out: Path) -> Path:
        with self.http.open("GET", f"/v1/rms/{_q(check_name(name))}/files", headers={"Accept": ARROW}) as r:
            body = self.http.read(r, f"the pull of {name}", "; nothing was written: pull again")
        try:
            files = run_files_of(body)
        except ValueError as e:
            raise EmbrmError(f"{self.uri} sent reward model {name!r} in a shape this client cannot read ({e})") \
                from None
        return write_run(files, out)

    # ------------------------------------------------------------ extraction
    def extraction_engines(self) -> tuple[str, ...]:
        """A service extracts with its own model: only its dataset jobs write vectors."""
        return ("service",)

    def upload(self, rows: Iterable[dict[str, Any]], dataset_hash: str, name: str, kind: str) -> dict[str, Any]:
        """:meth:`write_rows` from normalised dict rows, under a dataset name; returns the
        server's answer (hash, rows, name, kind)."""
        return self._put_rows(upload_batches(rows), dataset_hash, name, kind)

    def _put_rows(self, batches: Iterable[pa.RecordBatch], dataset_hash: str, name: str, kind: str
                  ) -> dict[str, Any]:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, S.UPLOAD_SCHEMA) as w:
            for b in batches:
                w.write_batch(b)
        with self.http.open("PUT", "/v1/datasets", {"name": name, "kind": kind, "dataset_hash": dataset_hash},
                            sink.getvalue().to_pybytes(), {"Content-Type": ARROW}) as r:
            got = json.loads(r.read())
        if got["dataset_hash"] != dataset_hash:
            raise EmbrmError("the server fingerprinted the rows differently; are client and server the same embrm?")
        return got

    def start_entry(self, dataset_hash: str, name: str, kind: str, source: dict[str, Any]) -> dict[str, Any]:
        """Start (or find) the dataset job of an uploaded dataset under the served model."""
        return self.http.json("POST", "/v1/entries", {"dataset": dataset_hash, "name": name, "kind": kind,
                                                      "source": source})

    # ---------------------------------------- the write protocol (copies in)
    def has_rows(self, dataset_hash: str) -> bool:
        try:
            self.http.json("GET", f"/v1/datasets/{_q(dataset_hash)}")
        except EmbrmError as e:
            if "has no rows here" in str(e):
                return False
            raise
        return True

    def write_rows(self, dataset_hash: str, batches: Iterable[pa.RecordBatch], n_rows: int, kind: str) -> None:
        """PUT the rows (``PUT /v1/datasets``) unless the service holds them already: the
        server checks them, recomputes the hash and refuses a mismatch before it stores
        anything."""
        if self.has_rows(dataset_hash):
            return
        got = self._put_rows(_upload_batches(batches), dataset_hash, "uploaded", kind)
        if got.get("rows") != n_rows:
            raise EmbrmError(f"{self.uri} stored {got.get('rows')} rows of dataset {dataset_hash[:12]}, not {n_rows}")

    def begin_entry(self, model_hash: str, model_name: str, model_config: dict[str, Any], dataset_hash: str,
                    dataset_name: str, dataset_source: dict[str, Any], kind: str, n_rows: int) -> None:
        self.http.json("POST", "/v1/entries/register", {
            "model_hash": model_hash, "model_name": model_name, "model_config": model_config,
            "dataset_hash": dataset_hash, "dataset_name": dataset_name, "dataset_source": dataset_source,
            "kind": kind, "n_rows": n_rows})

    def vector_info(self, model_hash: str) -> VectorInfo | None:
        """What the model's vector table on the service holds (``GET /v1/vectors/{hash}/info``)."""
        d = self.http.json("GET", f"/v1/vectors/{_q(model_hash)}/info")["info"]
        return None if d is None else VectorInfo(d["dim"], d["dtype"], tuple(d["layers"]), d["provenance"])

    def missing_keys(self, model_hash: str, keys: pa.Array) -> pa.Array:
        body = to_ipc(pa.table({"item_key": keys.cast(pa.string())}))
        with self.http.open("POST", f"/v1/vectors/{_q(model_hash)}/missing", body=body,
                            headers={"Content-Type": ARROW, "Accept": ARROW}) as r:
            return pa.ipc.open_stream(r).read_all().column("item_key").combine_chunks()

    def commit_vectors(self, model_hash: str, table: pa.Table) -> int:
        """One window of vectors (a table of ``build_vector_table``, provenance records in
        its metadata), checked and committed by the service; returns the rows added."""
        with self.http.open("PUT", f"/v1/vectors/{_q(model_hash)}", body=to_ipc(table),
                            headers={"Content-Type": ARROW}) as r:
            return int(json.loads(r.read())["added"])

    def finish_entry(self, model_hash: str, dataset_hash: str) -> Entry:
        d = self.http.json("POST", f"/v1/entries/{_q(model_hash)}/{_q(dataset_hash)}/finish", {})
        return Entry.from_summary(d["entry"])

    def entry_provenance(self, model: str, dataset: str, ids: bool = False) -> dict[str, Any]:
        """How the entry's vectors were computed (``GET .../provenance``; see
        :func:`embrm.store.provenance.entry_provenance`)."""
        return self.http.json("GET", f"/v1/entries/{_q(model)}/{_q(dataset)}/provenance", params={"ids": ids or None})

    def entry_status(self, model_hash: str, dataset_hash: str) -> dict[str, Any]:
        return self.http.json("GET", f"/v1/entries/{model_hash}/{dataset_hash}")


def _upload_batches(batches: Iterable[pa.RecordBatch | pa.Table]) -> Iterator[pa.RecordBatch]:
    """Batches of the row schema as batches of the upload schema (the server derives
    position and item key again, from the order and the texts)."""
    for b in batches:
        t = pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b
        yield from t.select(S.UPLOAD_SCHEMA.names).cast(S.UPLOAD_SCHEMA).to_batches()
