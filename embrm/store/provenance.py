"""Provenance: which software, device and dtype produced each stored vector.

A fingerprint names what a vector *should* be (weights, pooling, layers...); it cannot
say how it was really computed. So every vector row carries a short provenance id (the
``provenance`` column of a vector table), and the store's ``provenance`` table maps each
id to its facts (JSON): the versions of torch, transformers and embrm, the device name
(CPU model or GPU name), the dtype the forward pass really ran in, the engine (local, ray,
service) and the time the id was first committed.

The id hashes the facts without the time, so one extraction (many commits) has one id,
and an entry whose vectors have more than one id was computed in more than one way (part
GPU, part CPU; part float32, part bfloat16): ``embrm store show`` marks it.

Facts travel with the vectors: :func:`build_vector_table` puts ``{id: facts}`` in the
table's schema metadata (which survives Arrow IPC and Parquet), and the writer records
them when it commits (:meth:`ProvenanceTable.record`). Vector tables of an older embrm
have no ``provenance`` column: they still read, and their rows have no provenance.
"""
from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from embrm.errors import EmbrmError
from embrm.store.keys import _sha, canonical_json
from embrm.store.tables import merge

if TYPE_CHECKING:
    from embrm.store.catalog import Entry
    from embrm.store.lance_store import LanceStore
    from embrm.store.tables import Tables

TABLE = "provenance"
COLUMN = "provenance"
META_KEY = b"embrm.provenance"  # schema metadata of a vector batch: {id: facts} (JSON)
SCHEMA = pa.schema([pa.field("prov_id", pa.string(), nullable=False,
                             metadata={"lance-schema:unenforced-primary-key": "true"}),
                    ("facts", pa.string())])
#: The facts an extraction records; ``time`` does not enter the id.
FIELDS = ("torch", "transformers", "embrm", "device", "dtype", "engine", "time")
MAX_FACTS_BYTES = 4096  # one record's JSON: a bound for what arrives from outside


def prov_id(facts: dict[str, Any]) -> str:
    """The short id of a provenance: a hash of its facts without the time."""
    return _sha(canonical_json({k: v for k, v in facts.items() if k != "time"}).encode())[:12]


def check_facts(facts: Any) -> dict[str, str]:
    """A provenance record as it may arrive from a bundle or a client: a flat object of
    short strings; one line naming what is wrong."""
    if not isinstance(facts, dict) or not all(isinstance(k, str) and isinstance(v, (str, int, float, type(None)))
                                              for k, v in facts.items()):
        raise EmbrmError("a provenance record must be a flat JSON object of strings; the bundle or client is damaged")
    if len(canonical_json(facts)) > MAX_FACTS_BYTES:
        raise EmbrmError(f"a provenance record is over {MAX_FACTS_BYTES} bytes; the bundle or client is damaged")
    return {k: "" if v is None else str(v) for k, v in facts.items()}


def records_of(schema: pa.Schema) -> dict[str, dict[str, str]]:
    """The ``{id: facts}`` a vector batch carries in its schema metadata (empty if none)."""
    raw = (schema.metadata or {}).get(META_KEY)
    if not raw:
        return {}
    try:
        recs = json.loads(raw)
    except ValueError:
        raise EmbrmError("a vector batch's provenance metadata is not JSON; it is damaged") from None
    if not isinstance(recs, dict):
        raise EmbrmError("a vector batch's provenance metadata is not an object of records; it is damaged")
    return {str(k): check_facts(v) for k, v in recs.items()}


def with_records(table: pa.Table, records: dict[str, dict[str, Any]]) -> pa.Table:
    """``table`` carrying ``records`` (``{id: facts}``) in its schema metadata."""
    meta = dict(table.schema.metadata or {})
    meta[META_KEY] = json.dumps(records, sort_keys=True).encode()
    return table.replace_schema_metadata(meta)


class ProvenanceTable:
    """The ``provenance`` table of one store: id -> facts, written once per id."""

    def __init__(self, tables: Tables):
        self.tables = tables
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def record(self, records: dict[str, dict[str, Any]]) -> None:
        """Store the records whose ids this store lacks (once per id and process)."""
        with self._lock:
            new = {k: v for k, v in records.items() if k not in self._known}
        if not new:
            return
        if self.tables.open(TABLE) is None:
            self.tables.create(TABLE, SCHEMA)
        data = pa.Table.from_pylist([{"prov_id": k, "facts": canonical_json(v)} for k, v in new.items()],
                                    schema=SCHEMA)
        with self.tables.lock(TABLE):
            merge(self.tables.get(TABLE), "prov_id", data)
        with self._lock:
            self._known |= set(new)

    def facts(self, ids: list[str] | None = None) -> dict[str, dict[str, str]]:
        """Every record (or those of ``ids``)."""
        ds = self.tables.open(TABLE)
        if ds is None:
            return {}
        out = {r["prov_id"]: json.loads(r["facts"]) for r in ds.to_table().to_pylist()}
        return out if ids is None else {k: out[k] for k in ids if k in out}


def id_counts(ids: pa.Array | pa.ChunkedArray) -> dict[str, int]:
    """How many rows carry each provenance id ("" for rows without one, as an older embrm wrote)."""
    vc = pc.value_counts(pc.fill_null(ids, ""))
    return {str(v["values"]): int(v["counts"]) for v in vc.to_pylist()}


def describe(record: dict[str, Any]) -> str:
    """One line for one provenance record of :func:`~embrm.store.provenance.entry_provenance`."""
    f = record.get("facts") or {}
    if not record.get("id"):
        return f"{record['vectors']} vectors: no provenance recorded (written by an older embrm)"
    return (f"{record['vectors']} vectors [{record['id']}]: {f.get('dtype', '?')} on {f.get('device', '?')}, "
            f"engine {f.get('engine', '?')}, torch {f.get('torch', '?')}, transformers {f.get('transformers', '?')}, "
            f"embrm {f.get('embrm', '?')}, first committed {f.get('time', '?')}")


def mixed(prov: dict[str, Any]) -> bool:
    """Whether an entry's vectors come from more than one provenance."""
    return len(prov.get("provenance") or []) > 1


def entry_provenance(store: LanceStore, e: Entry, ids: bool = False) -> dict[str, Any]:
    """How an entry's vectors were computed: one record per provenance id with the number
    of the entry's vectors that carry it; with ``ids``, also key -> id for every stored
    key of the entry ("" for a vector without provenance)."""
    info = store.vectors.info(e.model_hash)
    want = pc.unique(store.rows.keys(e.dataset_hash))
    out: dict[str, Any] = {"provenance": []}
    if info is None:
        return out | ({"ids": {}} if ids else {})
    cols = ("provenance",) if info.provenance else ()
    vt = store.vectors.keys(e.model_hash, cols)
    vt = vt.filter(pc.is_in(vt.column("item_key"), value_set=want))
    col = vt.column("provenance") if info.provenance else pa.nulls(len(vt), pa.string())
    counts = id_counts(col)
    facts = store.provenance.facts([k for k in counts if k])
    out["provenance"] = [{"id": k, "vectors": n, "facts": facts.get(k)} for k, n in sorted(counts.items())]
    if ids:
        out["ids"] = dict(zip(vt.column("item_key").to_pylist(), pc.fill_null(col, "").to_pylist()))
    return out
