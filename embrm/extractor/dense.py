"""Dense copies of GGUF models, kept on local disk so a GGUF is unpacked once per machine.

Why: loading a GGUF through transformers is slow where it should not matter. On the
2-core machine this was measured on, Gemma 3 270M took 45 s to load, of which reading
the GGUF's config (its 262,144-token vocabulary is in the metadata) took 12 s, building
the fast tokenizer from that vocabulary 15 s, and unpacking the quantised tensors the
rest; SmolLM2-135M took 18 s. The same model and tokenizer saved once in the
safetensors and ``tokenizer.json`` formats load in 2.5 s (SmolLM2: 0.2 s). A researcher extracts many
sets with one base model, and the service and ``embrm score`` load it on every start.

What is kept: the model exactly as :func:`~embrm.extractor.models.load_pretrained`
built it (dequantised, in the requested dtype, for the requested auto class) and the
tokenizer exactly as transformers built it from the GGUF. Vectors are bit-identical
either way (``tests/test_dense_cache.py``), so the model fingerprint, which is the
GGUF's own content hash, does not change.

Where: ``$EMBRM_MODEL_CACHE``, else ``$XDG_CACHE_HOME/embrm/models``, else
``~/.cache/embrm/models``; ``EMBRM_MODEL_CACHE=off`` turns it off. A copy is written
to a temporary folder and renamed into place, so a crash leaves no half copy, and two
processes building the same copy at once both succeed. A copy that fails to load (a
disk error, a transformers upgrade) is set aside and rebuilt from the GGUF. Only
safetensors and JSON are read back; no pickle and no remote code.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

OFF = ("off", "0", "no", "false", "")
MARKER = "embrm-dense.json"
STALE_S = 3600  # a copy being written for longer than this was left by a dead process


def cache_root() -> Path | None:
    """The folder dense copies live in, or None where the cache is turned off."""
    env = os.environ.get("EMBRM_MODEL_CACHE")
    if env is not None:
        return None if env.strip().lower() in OFF else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "embrm" / "models"


def _key(weights: str, what: str) -> dict[str, str]:
    import transformers

    return {"weights": weights, "what": what, "transformers": transformers.__version__}


def _folder(root: Path, key: dict[str, str]) -> Path:
    return root / f"{key['weights'][:24]}-{key['what']}"


def _valid(folder: Path, key: dict[str, str]) -> bool:
    try:
        return json.loads((folder / MARKER).read_text()) == key
    except (OSError, ValueError):
        return False


def cached(weights: str, what: str, build: Callable[[], Any], load: Callable[[Path], Any],
           save: Callable[[Any, Path], None]) -> Any:
    """``build()``'s result, read from its dense copy where one is kept.

    ``weights`` pins the GGUF's content and ``what`` names the artefact (``AutoModel-
    bfloat16``, ``tokenizer``); a copy made by another transformers version is rebuilt.
    """
    root = cache_root()
    if root is None:
        return build()
    key = _key(weights, what)
    folder = _folder(root, key)
    if _valid(folder, key):
        try:
            return load(folder)
        except Exception:  # noqa: BLE001 - an unreadable copy is rebuilt, never trusted
            shutil.rmtree(folder, ignore_errors=True)
    obj = build()
    _keep(obj, root, folder, key, save)
    return obj


def _keep(obj: Any, root: Path, folder: Path, key: dict[str, str], save: Callable[[Any, Path], None]) -> None:
    """Write the copy beside its place and rename it in; a cache that cannot be written
    (read-only home, full disk) costs only the next load's time."""
    tmp: Path | None = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        for old in root.glob(".building-*"):  # left by a process killed while it wrote
            if time.time() - old.stat().st_mtime > STALE_S:
                shutil.rmtree(old, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
        save(obj, tmp)
        (tmp / MARKER).write_text(json.dumps(key))
        if folder.exists() and not _valid(folder, key):
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        tmp = None
    except Exception:  # noqa: BLE001 - another process renamed its copy in first, or the disk said no
        pass
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
