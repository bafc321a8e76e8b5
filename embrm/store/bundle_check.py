"""A bundle read as hostile input: everything checked before anything is written.

In order, each failure one line naming what is wrong:

1. the manifest: at most ``MAX_MANIFEST`` bytes of JSON, this format, every field of
   its type, sizes within bounds (a manifest claiming absurd sizes is refused before a
   byte of data is read), file names of the bundle's own layout only;
2. the model fingerprint: recomputed from its parts, it must be the hash claimed;
3. every file: its size, then its sha256, as the manifest says;
4. the rows: the row schema, positions 0..n-1, every item key recomputed from its texts
   (:func:`embrm.store.keys.item_key`, the key function of every extraction; the bad rows
   are named), and the dataset hash recomputed from the rows as an extraction computes it;
5. the vectors: dim, dtype and layers as claimed, finite, one row per key, every key a
   key of the dataset, provenance ids recorded in the manifest, the checksum as claimed.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embrm.errors import EmbrmError
from embrm.store import schema as S
from embrm.store.bundle import FORMAT, FORMAT_VERSION, MANIFEST, ROWS_FILE, VECTORS_FILE, sha256_file
from embrm.store.catalog import Entry, check_dataset_name, now
from embrm.store.keys import DatasetHasher, fingerprint_of_config, item_key
from embrm.store.provenance import check_facts
from embrm.store.transfer import SCAN_ROWS, EntrySource, checksum, digests, layer_arrays
from embrm.store.vectors import VectorInfo

if TYPE_CHECKING:
    from embrm.store.base import Store
    from embrm.store.copy import CopyResult

MAX_MANIFEST = 4 << 20
MAX_ROWS = 1 << 32
MAX_DIM = 1 << 16
MAX_LAYERS = 512
MAX_FILE_BYTES = 1 << 40
SHOWN = 5
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _bad(what: str) -> EmbrmError:
    return EmbrmError(f"bundle refused, nothing was written: {what}")


def _get(d: Any, key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(d, dict) or key not in d or not isinstance(d[key], typ) or isinstance(d[key], bool) and \
            typ is int:
        raise _bad(f"the manifest's {where}{key} is missing or not {getattr(typ, '__name__', typ)}")
    return d[key]


def _bounded(n: int, hi: int, what: str) -> int:
    if not 0 <= n <= hi:
        raise _bad(f"the manifest claims {what} = {n}, outside 0..{hi}; it is damaged or hostile")
    return n


def read_manifest(root: Path) -> dict[str, Any]:
    """Step 1 of the module docstring."""
    p = root / MANIFEST
    if not p.is_file():
        raise EmbrmError(f"{root} is not a bundle: it has no {MANIFEST}; make one with "
                         "`embrm store export MODEL DATASET --format bundle --out DIR`")
    if p.stat().st_size > MAX_MANIFEST:
        raise _bad(f"{MANIFEST} is {p.stat().st_size} bytes, over {MAX_MANIFEST}")
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad(f"{MANIFEST} is not JSON ({str(e)[:100]})") from None
    if _get(m, "format", str, "") != FORMAT or _get(m, "format_version", int, "") != FORMAT_VERSION:
        raise _bad(f"{MANIFEST} is format {m.get('format')!r} version {m.get('format_version')!r}; this embrm reads "
                   f"{FORMAT} {FORMAT_VERSION}")
    model, ds, vec = _get(m, "model", dict, ""), _get(m, "dataset", dict, ""), _get(m, "vectors", dict, "")
    for d, k in ((model, "hash"), (ds, "hash")):
        if not HEX64.match(_get(d, k, str, "")):
            raise _bad(f"the manifest's {k} {str(d[k])[:80]!r} is not 64 hex digits")
    _get(model, "config", dict, "model.")
    check_dataset_name(_get(ds, "name", str, "dataset."))
    if _get(ds, "kind", str, "dataset.") not in S.KINDS:
        raise _bad(f"the manifest's dataset kind {ds['kind'][:40]!r} is not one of {S.KINDS}")
    _bounded(_get(ds, "rows", int, "dataset."), MAX_ROWS, "dataset.rows")
    _bounded(_get(vec, "count", int, "vectors."), ds["rows"], "vectors.count")
    _bounded(_get(vec, "dim", int, "vectors."), MAX_DIM, "vectors.dim")
    layers = _get(vec, "layers", list, "vectors.")
    if not 0 < len(layers) <= MAX_LAYERS or not all(isinstance(x, int) and not isinstance(x, bool) for x in layers):
        raise _bad("the manifest's vectors.layers is not a short list of layer numbers")
    if _get(vec, "dtype", str, "vectors.") not in S.VECTOR_DTYPES:
        raise _bad(f"the manifest's vector dtype {vec['dtype'][:40]!r} is not one of {S.VECTOR_DTYPES}")
    _get(vec, "checksum", str, "vectors.")
    files = _get(m, "files", dict, "")
    if set(files) != {ROWS_FILE, VECTORS_FILE}:
        raise _bad(f"the manifest lists files {sorted(files)[:4]}; a bundle holds exactly {ROWS_FILE} and "
                   f"{VECTORS_FILE}")
    for name, f in files.items():
        _bounded(_get(f, "bytes", int, f"files[{name}]."), MAX_FILE_BYTES, f"{name}'s bytes")
        if not HEX64.match(_get(f, "sha256", str, f"files[{name}].")):
            raise _bad(f"the manifest's sha256 of {name} is not 64 hex digits")
    prov = _get(m, "provenance", dict, "")
    m["provenance"] = {str(k)[:64]: check_facts(v) for k, v in prov.items()}
    return m


def check_fingerprint(m: dict[str, Any]) -> None:
    """Step 2: the model hash is the hash of the fingerprint parts the manifest gives."""
    try:
        fp = fingerprint_of_config(m["model"]["config"], m["model"]["hash"])
    except EmbrmError as e:
        raise _bad(str(e)) from None
    if set(fp.layers) != set(m["vectors"]["layers"]):
        raise _bad(f"the fingerprint's layers {list(fp.layers)} are not the vectors' {m['vectors']['layers']}")


def check_files(root: Path, m: dict[str, Any]) -> None:
    """Step 3: sizes first (cheap), then every sha256."""
    for name, f in m["files"].items():
        p = root / name
        if not p.is_file():
            raise _bad(f"{name} is missing")
        if p.stat().st_size != f["bytes"]:
            raise _bad(f"{name} is {p.stat().st_size} bytes but the manifest says {f['bytes']} (cut short or changed)")
    for name, f in m["files"].items():
        got = sha256_file(root / name)
        if got != f["sha256"]:
            raise _bad(f"{name} has sha256 {got[:16]}... but the manifest says {f['sha256'][:16]}...: the file "
                       "was changed after export")


def _parquet(path: Path, name: str) -> pa.Table:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise _bad(f"{name} is not a readable Parquet file ({str(e).splitlines()[0][:120]})") from None


def check_rows(root: Path, m: dict[str, Any]) -> pa.Table:
    """Step 4: the rows table, keys and dataset hash recomputed."""
    t = _parquet(root / ROWS_FILE, ROWS_FILE)
    missing = [n for n in S.ROW_SCHEMA.names if n not in t.schema.names]
    if missing:
        raise _bad(f"{ROWS_FILE} lacks the column(s) {missing}")
    try:
        t = t.select(S.ROW_SCHEMA.names).cast(S.ROW_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise _bad(f"{ROWS_FILE}'s columns do not have the row schema's types ({str(e)[:100]})") from None
    n = m["dataset"]["rows"]
    if len(t) != n or not np.array_equal(t.column("position").to_numpy(), np.arange(n)):
        raise _bad(f"{ROWS_FILE} holds {len(t)} rows, not positions 0..{n - 1} as the manifest says")
    for name in ("prompt", "response", "item_key"):
        if t.column(name).null_count:
            raise _bad(f"{ROWS_FILE} has a row without {name}")
    hasher, bad = DatasetHasher(), []
    names = S.UPLOAD_SCHEMA.names
    for b in t.to_batches(SCAN_ROWS):  # columns as lists, zipped: no per-row dict of every column
        cols = {n: b.column(n).to_pylist() for n in (*names, "item_key", "position")}
        for pos, key, prompt, response, *rest in zip(cols["position"], cols["item_key"], cols["prompt"],
                                                     cols["response"], *(cols[n] for n in names)):
            if item_key(prompt, response) != key:
                bad.append(pos)
            hasher.update(dict(zip(names, rest)))
    if bad:
        raise _bad(f"{len(bad)} row(s) have item keys that are not the hash of their texts (rows "
                   f"{', '.join(map(str, bad[:SHOWN]))}{' ...' if len(bad) > SHOWN else ''}): texts or keys changed")
    if hasher.hexdigest() != m["dataset"]["hash"]:
        raise _bad(f"the rows hash to dataset {hasher.hexdigest()[:12]}, not the {m['dataset']['hash'][:12]} claimed")
    return t


def check_vectors(root: Path, m: dict[str, Any], keys: pa.Array) -> tuple[pa.Table, dict[str, bytes]]:
    """Step 5: the vectors as claimed, of the dataset's keys, with their checksum; and
    their digests."""
    v = m["vectors"]
    info = VectorInfo(v["dim"], v["dtype"], tuple(v["layers"]))
    t = _parquet(root / VECTORS_FILE, VECTORS_FILE)
    want = info.schema()
    if set(t.schema.names) != set(want.names):
        raise _bad(f"{VECTORS_FILE} has columns {t.schema.names[:8]}, not {want.names}")
    try:
        t = t.select(want.names).cast(want)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        raise _bad(f"{VECTORS_FILE}'s vectors are not {v['dtype']} of dim {v['dim']}") from None
    if len(t) != v["count"] or t.column("item_key").null_count:
        raise _bad(f"{VECTORS_FILE} holds {len(t)} vectors, the manifest says {v['count']}")
    if len(pc.unique(t.column("item_key"))) != len(t):
        raise _bad(f"{VECTORS_FILE} holds an item key twice")
    stray = pc.invert(pc.is_in(t.column("item_key"), value_set=keys))
    if pc.any(stray).as_py():
        raise _bad(f"{VECTORS_FILE} holds vectors of keys no row has (e.g. {t.filter(stray).column(0)[0]})")
    for layer, a in layer_arrays(t, info).items():
        if not np.isfinite(a).all():
            raise _bad(f"{VECTORS_FILE} has NaN or inf values in layer {layer}")
    ids = {i for i in pc.unique(t.column("provenance")).to_pylist() if i}
    if ids - set(m["provenance"]):
        raise _bad(f"vectors carry provenance id(s) {sorted(ids - set(m['provenance']))[:3]} the manifest lacks")
    keyed = digests(t, info)
    if checksum(keyed) != v["checksum"]:
        raise _bad("the vectors' checksum is not the manifest's")
    return t, keyed


class BundleSource(EntrySource):
    """A checked bundle as the source of a copy into a store."""

    def __init__(self, m: dict[str, Any], rows: pa.Table, vectors: pa.Table, keyed: dict[str, bytes]):
        self.m, self._rows, self._vectors, self.known_digests = m, rows, vectors, keyed
        v, d, t = m["vectors"], m["dataset"], now()
        self.info = VectorInfo(v["dim"], v["dtype"], tuple(v["layers"]))
        self.entry = Entry(m["model"]["hash"], str(m["model"].get("name") or m["model"]["hash"][:12])[:200],
                           m["model"]["config"], d["hash"], d["name"], dict(d.get("source") or {}), d["kind"],
                           d["rows"], v["count"], v["dim"], v["dtype"], tuple(v["layers"]), "complete", 0, t, t,
                           str(m.get("embrm_version", ""))[:40])

    def rows(self) -> Iterator[pa.Table]:
        for s in range(0, len(self._rows), SCAN_ROWS):
            yield self._rows.slice(s, SCAN_ROWS)

    def keys(self) -> pa.Array:
        return self._vectors.column("item_key").combine_chunks()

    def vectors(self, want: pa.Array | None = None) -> Iterator[pa.Table]:
        t = self._vectors  # every key unless fewer are wanted (``want`` holds keys of these vectors)
        if want is not None and len(want) < len(t):
            t = t.filter(pc.is_in(t.column("item_key"), value_set=want))
        for s in range(0, len(t), SCAN_ROWS):
            yield t.slice(s, SCAN_ROWS)

    def records(self) -> dict[str, dict[str, str]]:
        return self.m["provenance"]


def checked_bundle(bundle: str | Path) -> BundleSource:
    """Steps 1-5 of the module docstring; the bundle as a source to copy from."""
    root = Path(bundle)
    m = read_manifest(root)
    check_fingerprint(m)
    check_files(root, m)
    rows = check_rows(root, m)
    vectors, keyed = check_vectors(root, m, pc.unique(rows.column("item_key")))
    return BundleSource(m, rows, vectors, keyed)


def import_bundle(store: Store, bundle: str | Path, progress: bool = False) -> CopyResult:
    """Check a bundle whole (:func:`embrm.store.bundle_check.checked_bundle`), then commit
    its entry into ``store`` as a copy does; a second import of it is a no-op."""
    from embrm.store.copy import copy_from, target_of

    target = target_of(store, "importing a bundle into it")
    return copy_from(checked_bundle(bundle), target, progress)
