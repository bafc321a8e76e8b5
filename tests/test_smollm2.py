"""The embedded default model (SmolLM2-135M-Instruct GGUF) on real HH-RLHF pairs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from embrm.extractor import extract
from embrm.extractor.models import default_gguf, load_pretrained, resolve_model
from embrm.store import open_store

from conftest import HH_RLHF, extract_config

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HH_RLHF.exists(), reason="../shared/data/hh-rlhf is absent")]


def test_default_model_on_hh_rlhf_matches_per_example_and_caches(tmp_path):
    assert default_gguf().suffix == ".gguf"
    cfg = extract_config(HH_RLHF, None, tmp_path / "s", limit=6, dtype="float32", max_length=256, quiet=True)
    res = extract(cfg)
    assert (res.rows, res.computed, res.status, res.kind) == (12, 12, "complete", "pairwise")
    assert res.model_name.startswith("SmolLM2-135M-Instruct")
    store = open_store(tmp_path / "s")
    emb = store.load(res.model_hash, res.dataset_hash)
    assert emb.vectors.shape == (12, 576) and np.isfinite(emb.vectors).all()
    # batched, length-sorted fp32 equals one-at-a-time fp32
    src = resolve_model(None)
    model = load_pretrained(src, "AutoModel", "float32", "cpu")
    from embrm.extractor.formatting import encode_batch
    from embrm.extractor.models import load_tokenizer

    tok = load_tokenizer(src)
    rows = store.rows.read(res.dataset_hash, ["prompt", "response"]).to_pylist()
    enc = encode_batch(tok, [r["prompt"] for r in rows], [r["response"] for r in rows], "raw", 256, "left")
    with torch.inference_mode():
        ref = np.stack([model(input_ids=torch.tensor([e.ids])).last_hidden_state[0, -1].numpy() for e in enc])
    np.testing.assert_allclose(emb.vectors, ref, rtol=1e-4, atol=1e-4)
    again = extract(cfg)
    assert (again.computed, again.cached, again.model_loaded) == (0, 12, False)


def test_quiet_means_quiet_third_party_bars_included(tmp_path):
    """`--quiet` silences the GGUF loader's "Converting and de-quantizing" bar too."""
    import subprocess
    import sys

    args = [sys.executable, "-m", "embrm.cli", "extract", "--dataset", str(HH_RLHF), "--limit", "2",
            "--max-length", "128", "--store", str(tmp_path / "s"), "--quiet"]
    res = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stderr == "" and "computed 4" in res.stdout
