"""Dense copies of GGUF models (embrm.extractor.dense), on the packaged SmolLM2 GGUF.

The copy must be exact: the same token ids and bit-identical hidden states as the model
unpacked from the GGUF, since vectors from either land under one fingerprint.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from embrm.extractor import dense
from embrm.extractor.datasets import DatasetSpec, iter_rows
from embrm.extractor.formatting import encode_batch
from embrm.extractor.models import load_pretrained, load_tokenizer, resolve_model

from conftest import HH_RLHF

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HH_RLHF.exists(), reason="../shared/data/hh-rlhf is absent")]


def _hidden(model, tok, texts) -> tuple[list[list[int]], np.ndarray]:
    enc = encode_batch(tok, [p for p, _ in texts], [r for _, r in texts], "raw", 128, "left")
    with torch.inference_mode():
        h = [model(input_ids=torch.tensor([e.ids])).last_hidden_state[0, -1].numpy() for e in enc]
    return [list(e.ids) for e in enc], np.stack(h)


def _copies(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


def test_a_gguf_is_unpacked_once_and_its_copy_is_exact(tmp_path, monkeypatch):
    root = tmp_path / "models"
    monkeypatch.setenv("EMBRM_MODEL_CACHE", str(root))
    texts = [(r["prompt"], r["response"]) for r in iter_rows(DatasetSpec(str(HH_RLHF), limit=6))]
    src = resolve_model(None)
    tok = load_tokenizer(src)
    model = load_pretrained(src, "AutoModel", "float32", "cpu")
    ids, ref = _hidden(model, tok, texts)
    assert _copies(root) == [f"{src.weights[:24]}-AutoModel-float32", f"{src.weights[:24]}-tokenizer"]
    # the second load reads the copy alone: the GGUF's folder is not even looked at
    gone = replace(src, load_path=str(tmp_path / "no-such-folder"))
    tok2, model2 = load_tokenizer(gone), load_pretrained(gone, "AutoModel", "float32", "cpu")
    ids2, again = _hidden(model2, tok2, texts)
    assert ids2 == ids and tok2.pad_token_id == tok.pad_token_id
    np.testing.assert_array_equal(again, ref)
    assert tok2.chat_template == tok.chat_template
    # a copy belongs to one GGUF's content: another hash finds none
    other = replace(gone, weights="0" * 64)
    with pytest.raises(Exception, match="cannot load"):
        load_tokenizer(other)


def test_a_damaged_or_stale_copy_is_rebuilt_and_off_means_off(tmp_path, monkeypatch):
    root = tmp_path / "models"
    monkeypatch.setenv("EMBRM_MODEL_CACHE", str(root))
    src = resolve_model(None)
    texts = [(r["prompt"], r["response"]) for r in iter_rows(DatasetSpec(str(HH_RLHF), limit=3))]
    tok = load_tokenizer(src)
    _, ref = _hidden(load_pretrained(src, "AutoModel", "float32", "cpu"), tok, texts)
    folder = root / f"{src.weights[:24]}-AutoModel-float32"
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a disk that lost half the file
    _, again = _hidden(load_pretrained(src, "AutoModel", "float32", "cpu"), tok, texts)
    np.testing.assert_array_equal(again, ref)
    assert dense._valid(folder, dense._key(src.weights, "AutoModel-float32"))
    # a copy made by another transformers version is not read
    marker = folder / dense.MARKER
    key = json.loads(marker.read_text())
    marker.write_text(json.dumps({**key, "transformers": "0.0.0"}))
    gone = replace(src, load_path=str(tmp_path / "no-such-folder"))
    with pytest.raises(Exception, match="cannot load model"):
        load_pretrained(gone, "AutoModel", "float32", "cpu")
    # off: nothing is written, the GGUF is read
    monkeypatch.setenv("EMBRM_MODEL_CACHE", "off")
    assert dense.cache_root() is None
    assert dense.cached("x" * 64, "thing", lambda: 7, lambda d: 0, lambda o, d: None) == 7


def test_an_unwritable_cache_costs_only_time(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("EMBRM_MODEL_CACHE", str(blocker / "models"))
    built = []
    assert dense.cached("y" * 64, "thing", lambda: built.append(1) or 5, lambda d: 0, lambda o, d: None) == 5
    assert dense.cached("y" * 64, "thing", lambda: built.append(1) or 5, lambda d: 0, lambda o, d: None) == 5
    assert built == [1, 1]


def test_a_copy_is_renamed_in_whole(tmp_path, monkeypatch):
    """A save that dies half-way leaves no copy behind, and the next call builds again."""
    monkeypatch.setenv("EMBRM_MODEL_CACHE", str(tmp_path))

    def dies(obj, d: Path) -> None:
        (d / "part.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    assert dense.cached("z" * 64, "thing", lambda: 3, lambda d: 0, dies) == 3
    assert list(tmp_path.iterdir()) == []
    stale, fresh = tmp_path / ".building-dead", tmp_path / ".building-alive"  # a killed writer's, a live one's
    for d in (stale, fresh):
        d.mkdir()
    os.utime(stale, (time.time() - 2 * dense.STALE_S,) * 2)
    seen = []
    assert dense.cached("z" * 64, "thing", lambda: 4, lambda d: seen.append(d) or 9,
                        lambda o, d: (d / "ok.json").write_text("{}")) == 4
    assert dense.cached("z" * 64, "thing", lambda: 4, lambda d: seen.append(d) or 9, lambda o, d: None) == 9
    assert len(seen) == 1 and (seen[0] / "ok.json").exists()
    assert not stale.exists() and fresh.exists()
