"""Vector windows sent to the service (``PUT /v1/vectors/{model_hash}``): hostile bytes in,
a table of the store's vector schema out, nothing written before everything is checked.

What a copy into a service sends: an Arrow IPC stream of one window of vector rows, as
:func:`~embrm.store.vectors.build_vector_table` makes them, with their provenance records
in the schema's metadata. Checked here, each failure one line naming it:

* the model is registered (a catalog entry with that hash, made by
  ``POST /v1/entries/register`` after its fingerprint parts were checked);
* columns: item key (string), token count (int32), truncation flag (bool), one
  fixed-size list of float32 or float16 per layer, the provenance id (string); layers
  are the registered fingerprint's, dim and dtype those of any table the model has;
* values: keys of 32 lowercase hex digits, each once; vectors finite; ids whose
  records come along (and are flat JSON of bounded size).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embrm.errors import EmbrmError
from embrm.serve.uploads import _first_line, _stream
from embrm.store.provenance import COLUMN as PROV_COLUMN
from embrm.store.provenance import records_of
from embrm.store.transfer import layer_arrays
from embrm.store.vectors import VectorInfo

if TYPE_CHECKING:
    from embrm.store.lance_store import LanceStore

KEY_PATTERN = r"^[0-9a-f]{32}$"
MAX_DIM = 1 << 16


def registered_layers(store: LanceStore, model_hash: str) -> tuple[int, ...]:
    """The layers of a model registered in the catalog; refuses an unknown model."""
    e = next((e for e in store.entries() if e.model_hash == model_hash), None)
    if e is None or not isinstance(e.model_config.get("layers"), list):
        raise EmbrmError(f"model {model_hash[:12]} is not registered here; register its entry first "
                         "(POST /v1/entries/register)")
    return tuple(int(x) for x in e.model_config["layers"])


def read_keys(path: Path) -> pa.Array:
    """An uploaded Arrow stream of one string column ``item_key`` (the keys a copy asks about)."""
    try:
        t = _stream(path).read_all()
    except (pa.ArrowException, OSError) as e:
        raise EmbrmError(f"the keys are not a readable Arrow stream ({_first_line(e)})") from None
    if t.schema.names != ["item_key"] or not pa.types.is_string(t.schema.field(0).type):
        raise EmbrmError("send the keys as an Arrow stream of one string column, item_key")
    keys = t.column(0).combine_chunks()
    check_keys(keys)
    return keys


def check_keys(keys: pa.Array) -> None:
    if keys.null_count or (len(keys) and not pc.all(pc.match_substring_regex(keys, KEY_PATTERN)).as_py()):
        raise EmbrmError("every item key must be 32 lowercase hex digits")


def checked_vectors(store: LanceStore, model_hash: str, path: Path) -> pa.Table:
    """The uploaded window, checked (module docstring) and ready for ``writer.commit``."""
    try:
        t = _stream(path).read_all()
        return _checked(store, model_hash, t)
    except EmbrmError:
        raise
    except (pa.ArrowException, OSError, ValueError, KeyError, TypeError) as e:
        raise EmbrmError(f"the vectors could not be read as the vector schema ({type(e).__name__}: "
                         f"{_first_line(e)})") from None


def _checked(store: LanceStore, model_hash: str, t: pa.Table) -> pa.Table:
    layers = registered_layers(store, model_hash)
    try:
        info = VectorInfo.of_schema(t.schema)
    except (EmbrmError, AttributeError):
        raise EmbrmError("the vectors have no layer columns of fixed-size float lists") from None
    if set(info.layers) != set(layers):
        raise EmbrmError(f"the vectors are of layers {list(info.layers)}, the model registered {list(layers)}")
    if not 0 < info.dim <= MAX_DIM:
        raise EmbrmError(f"dim {info.dim} is outside 1..{MAX_DIM}")
    have = store.vector_info(model_hash)
    if have is not None and (have.dim, have.dtype) != (info.dim, info.dtype):
        raise EmbrmError(f"the vectors are dim {info.dim} {info.dtype}; this model's table holds dim {have.dim} "
                         f"{have.dtype}")
    want = VectorInfo(info.dim, info.dtype, info.layers).schema()
    if set(t.schema.names) != set(want.names):
        raise EmbrmError(f"the vectors have columns {t.schema.names[:8]}, not {want.names}")
    for f in want:
        if t.schema.field(f.name).type != f.type:
            raise EmbrmError(f"column {f.name} is {t.schema.field(f.name).type}, not {f.type}")
    records = records_of(t.schema)
    t = t.select(want.names).combine_chunks()
    keys = t.column("item_key").combine_chunks()
    check_keys(keys)
    if len(pc.unique(keys)) != len(keys):
        raise EmbrmError("an item key comes twice in the window")
    for layer, a in layer_arrays(t, info).items():
        if not np.isfinite(a).all():
            raise EmbrmError(f"layer {layer} has NaN or inf values; refusing to store them")
    ids = {i for i in pc.unique(t.column(PROV_COLUMN)).to_pylist() if i}
    if ids - set(records):
        raise EmbrmError(f"provenance id(s) {sorted(ids - set(records))[:3]} come without their records")
    meta: dict[Any, Any] = dict(t.schema.metadata or {})
    return t.replace_schema_metadata({k: v for k, v in meta.items() if k == b"embrm.provenance"})


def info_json(info: VectorInfo | None) -> dict[str, Any] | None:
    return None if info is None else {"dim": info.dim, "dtype": info.dtype, "layers": list(info.layers),
                                      "provenance": info.provenance}

