"""Bundles: one entry as a directory that stands alone, to publish (a hub dataset
repository, a paper's artifact) and to import into any store.

A bundle holds::

    embrm-entry.json            the manifest (below)
    croissant.json              a Croissant (JSON-LD) description of the files
    README.md                   a dataset card whose `configs` name the two tables
    rows/rows-00000.parquet     the dataset's rows in order: position, item key,
                                prompt id, response index, role, label, reward, texts
    vectors/vectors-00000.parquet  one row per item key, in key order: token facts, one
                                fixed-size list column per stored layer, the provenance id

The manifest names the model fingerprint and its parts, the dataset (hash, name, kind,
source, rows), the vectors (count, dim, dtype, layers, checksum in key order as
:mod:`embrm.store.transfer` computes it), every file's size and sha256, and the
provenance records of the ids the vectors carry. Plain tools read the files as they are
(``pyarrow.parquet``, ``datasets.load_dataset``).

Import: :func:`embrm.store.bundle_check.import_bundle` checks everything first, then
commits like a copy does (:func:`~embrm.store.copy.copy_from`).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from embrm import __version__
from embrm.errors import EmbrmError
from embrm.store.exporting import write_parquet
from embrm.store.transfer import EntrySource, checksum, digests, source_of

if TYPE_CHECKING:
    from embrm.store.base import Store

MANIFEST = "embrm-entry.json"
CROISSANT = "croissant.json"
FORMAT, FORMAT_VERSION = "embrm-bundle", 1
ROWS_FILE, VECTORS_FILE = "rows/rows-00000.parquet", "vectors/vectors-00000.parquet"
#: The vectors file: random keys and float vectors gain nothing from dictionaries or
#: snappy (both cost a pass over every byte on write and read) or from min/max
#: statistics; large row groups keep each layer's values in long contiguous pages.
VECTOR_PARQUET = {"compression": "none", "use_dictionary": False, "write_statistics": False,
                  "data_page_size": 8 << 20}
VECTOR_GROUP_ROWS = 16384


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def export_bundle(store: Store, model: str, dataset: str, out: str | Path, force: bool = False) -> Path:
    """Write the entry as a bundle directory ``out`` (see the module docstring); it
    appears whole or not at all. An existing non-empty ``out`` is replaced only with ``force``."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise EmbrmError(f"{out} exists and is not an empty directory; pass --force to replace it")
    source = source_of(store, model, dataset)
    tmp = out.with_name(out.name + ".tmp-bundle")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        manifest = _write_parts(source, tmp)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        (tmp / CROISSANT).write_text(json.dumps(croissant(manifest), indent=2))
        (tmp / "README.md").write_text(dataset_card(manifest))
        if out.exists():
            shutil.rmtree(out)
        tmp.replace(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_parts(source: EntrySource, tmp: Path) -> dict[str, Any]:
    e, info = source.entry, source.info
    write_parquet(tmp / ROWS_FILE, source.rows())
    keyed: dict[str, bytes] = {}
    ids: set[str] = set()

    def vector_tables() -> Iterator[pa.Table]:
        """Every vector in key order, so a bundle's bytes do not depend on the order the
        store that made it holds its rows in (the vectors are in memory once, here)."""
        parts = []
        for t in source.vectors():
            keyed.update(digests(t, info))
            ids.update(i for i in t.column("provenance").to_pylist() if i)
            parts.append(t.replace_schema_metadata(None))
        if parts:
            whole = pa.concat_tables(parts).sort_by("item_key")
            for s in range(0, len(whole), VECTOR_GROUP_ROWS):
                yield whole.slice(s, VECTOR_GROUP_ROWS)

    write_parquet(tmp / VECTORS_FILE, vector_tables(), **VECTOR_PARQUET)
    records = source.records()
    files = {}
    for name, rows in ((ROWS_FILE, e.n_rows), (VECTORS_FILE, len(keyed))):
        p = tmp / name
        files[name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size, "rows": rows}
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "embrm_version": __version__,
        "model": {"hash": e.model_hash, "name": e.model_name, "config": e.model_config},
        "dataset": {"hash": e.dataset_hash, "name": e.dataset_name, "kind": e.kind, "source": e.dataset_source,
                    "rows": e.n_rows},
        "vectors": {"count": len(keyed), "dim": info.dim, "dtype": info.dtype, "layers": list(info.layers),
                    "checksum": checksum(keyed)},
        "files": files,
        "provenance": {i: records[i] for i in sorted(ids) if i in records},
    }


# ------------------------------------------------------------------ descriptions
_CONTEXT = {
    "@language": "en", "@vocab": "https://schema.org/", "sc": "https://schema.org/",
    "cr": "http://mlcommons.org/croissant/", "rai": "http://mlcommons.org/croissant/RAI/",
    "dct": "http://purl.org/dc/terms/", "citeAs": "cr:citeAs", "column": "cr:column",
    "conformsTo": "dct:conformsTo", "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"}, "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract", "field": "cr:field", "fileObject": "cr:fileObject", "fileProperty": "cr:fileProperty",
    "fileSet": "cr:fileSet", "format": "cr:format", "includes": "cr:includes", "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath", "key": "cr:key", "md5": "cr:md5", "parentField": "cr:parentField", "path": "cr:path",
    "recordSet": "cr:recordSet", "references": "cr:references", "regex": "cr:regex", "repeated": "cr:repeated",
    "replace": "cr:replace", "separator": "cr:separator", "source": "cr:source", "subField": "cr:subField",
    "transform": "cr:transform",
}
_ROW_FIELDS = [("position", "sc:Integer"), ("item_key", "sc:Text"), ("prompt_id", "sc:Integer"),
               ("response_index", "sc:Integer"), ("role", "sc:Text"), ("label", "sc:Float"),
               ("reward", "sc:Float"), ("prompt", "sc:Text"), ("response", "sc:Text")]


def _field(rs: str, file_id: str, name: str, dtype: str, repeated: bool = False) -> dict[str, Any]:
    f = {"@type": "cr:Field", "@id": f"{rs}/{name}", "name": name, "dataType": dtype,
         "source": {"fileObject": {"@id": file_id}, "extract": {"column": name}}}
    return f | ({"repeated": True} if repeated else {})


def croissant(m: dict[str, Any]) -> dict[str, Any]:
    """A Croissant 1.0 description of a bundle's files and columns."""
    from embrm.store.schema import layer_column

    d, v = m["dataset"], m["vectors"]
    files = [{"@type": "cr:FileObject", "@id": name.split("/")[0] + "-parquet", "name": name, "contentUrl": name,
              "encodingFormat": "application/x-parquet", "sha256": f["sha256"], "contentSize": f"{f['bytes']} B"}
             for name, f in m["files"].items()]
    vec_fields = [_field("vectors", "vectors-parquet", n, t) for n, t in
                  (("item_key", "sc:Text"), ("n_tokens", "sc:Integer"), ("truncated", "sc:Boolean"),
                   ("provenance", "sc:Text"))]
    vec_fields += [_field("vectors", "vectors-parquet", layer_column(layer), "sc:Float", repeated=True)
                   for layer in v["layers"]]
    return {
        "@context": _CONTEXT, "@type": "sc:Dataset", "conformsTo": "http://mlcommons.org/croissant/1.0",
        "name": f"{d['name']} x {m['model']['name']}".replace("/", "_")[:200],
        "description": (f"{v['count']} embeddings ({v['dtype']}, dim {v['dim']}, layers {v['layers']}) of the "
                        f"{d['kind']} dataset {d['name']} ({d['rows']} rows) by model {m['model']['name']} "
                        f"(fingerprint {m['model']['hash']}), exported by embrm {m['embrm_version']}. "
                        f"Import with `embrm store import DIR`; the manifest is {MANIFEST}."),
        "url": "https://example.invalid/replace-with-where-this-bundle-is-published",
        "version": "1.0.0", "license": "https://example.invalid/replace-with-the-data-license",
        "distribution": files,
        "recordSet": [
            {"@type": "cr:RecordSet", "@id": "rows", "name": "rows",
             "field": [_field("rows", "rows-parquet", n, t) for n, t in _ROW_FIELDS]},
            {"@type": "cr:RecordSet", "@id": "vectors", "name": "vectors", "field": vec_fields},
        ],
    }


def dataset_card(m: dict[str, Any]) -> str:
    """A hub dataset card: two configs (rows, vectors), so ``load_dataset(DIR, "vectors")``
    reads each table by itself."""
    return (f"---\nconfigs:\n- config_name: rows\n  data_files: {ROWS_FILE}\n- config_name: vectors\n"
            f"  data_files: {VECTORS_FILE}\n---\n\n# {m['dataset']['name']} x {m['model']['name']}\n\n"
            f"embrm bundle: {m['vectors']['count']} vectors of {m['dataset']['rows']} rows. "
            f"`embrm store import <this directory>` checks every file against `{MANIFEST}` and imports it.\n")
