"""The extractor on a real (tiny, random) Llama saved with save_pretrained."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModel, AutoTokenizer

from embrm.cli import main as cli
from embrm.errors import EmbrmError
from embrm.extractor import ExtractConfig, extract
from embrm.extractor.batching import token_budget_batches
from embrm.extractor.formatting import encode_batch
from embrm.extractor.pooling import pool
from embrm.store import open_store
from embrm.store import schema as S

from conftest import EXTRACT_SCRIPT, extract_config
from procs import kill_after

PAIRS = [
    {"prompt": "What is two plus two?", "chosen": " Four.", "rejected": " Five, I think, or maybe six."},
    {"prompt": "Say hello.", "chosen": " Hello there, friend!", "rejected": " No."},
    {"prompt": "Name a colour.", "chosen": " Blue.", "rejected": " A colour is a property of light."},
    {"prompt": "Is water wet? Answer briefly please.", "chosen": " Yes.", "rejected": " Why do you ask?"},
]


def _jsonl(path: Path, recs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def _reference(model_dir: Path, texts: list[str], how: str = "last", starts: list[int] | None = None) -> np.ndarray:
    """One row at a time, no padding: the ground truth every batched path must match."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    m = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    with torch.inference_mode():
        for i, t in enumerate(texts):
            ids = torch.tensor([tok(t)["input_ids"]])
            h = m(input_ids=ids).last_hidden_state[0]
            if how == "last":
                out.append(h[-1].numpy())
            elif how == "mean-all":
                out.append(h.mean(0).numpy())
            else:
                out.append(h[starts[i]:].mean(0).numpy())
    return np.stack(out)


def _cfg(tmp_path: Path, model: Path, data: Path, **kw) -> ExtractConfig:
    kw.setdefault("dtype", "float32")
    return extract_config(data, model, tmp_path / "store", quiet=True, **kw)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("how", ["last", "mean", "mean-all"])
def test_pooling_is_correct_under_left_and_right_padding(tiny_model, side, how):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    m = AutoModel.from_pretrained(tiny_model, dtype=torch.float32).eval()
    texts = ["short", "a much longer text here", "mid length"]
    starts = [2, 5, 3]
    enc = [tok(t)["input_ids"] for t in texts]
    w = max(map(len, enc))
    ids = torch.zeros((3, w), dtype=torch.long)
    mask = torch.zeros((3, w), dtype=torch.long)
    for r, e in enumerate(enc):
        sl = slice(w - len(e), w) if side == "left" else slice(0, len(e))
        ids[r, sl] = torch.tensor(e)
        mask[r, sl] = 1
    with torch.inference_mode():
        h = m(input_ids=ids, attention_mask=mask).last_hidden_state
    got = pool(h, mask, torch.tensor(starts), how).numpy()
    want = _reference(tiny_model, texts, how, starts)
    np.testing.assert_allclose(got, want, atol=2e-5)
    # the seed paper's bug: position -1 of a right-padded batch is a pad for short rows
    if side == "right" and how == "last":
        assert not np.allclose(h[0, -1].numpy(), want[0], atol=1e-3)


def test_token_budget_batches_cover_every_row_once_within_budget():
    lengths = [5, 100, 7, 60, 60, 3, 250, 8]
    batches = token_budget_batches(lengths, batch_tokens=200)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 200
    assert batches[0] == [6]  # longest alone first: peak memory shows at once


def test_response_start_for_each_format(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    for fmt in ("raw", "pair", "chat"):
        [e] = encode_batch(tok, ["abc"], ["XY"], fmt, 100, "left")
        assert tok.decode(e.ids[e.response_start:]).startswith("XY"), fmt
    [e] = encode_batch(tok, ["abcdef"], ["XY"], "raw", 4, "left")
    assert e.truncated and e.n_tokens == 8 and tok.decode(e.ids) == "efXY" and e.response_start == 2
    [e] = encode_batch(tok, ["abcdef"], ["XY"], "raw", 4, "right")
    assert tok.decode(e.ids) == "abcd" and e.response_start == 4


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_batched_extraction_equals_one_example_at_a_time(tmp_path, tiny_model, padding_side, pooling):
    """Length-sorted, padded batches (either padding side) == each example alone, unpadded."""
    import shutil

    model_dir = tmp_path / f"tiny-{padding_side}"
    shutil.copytree(tiny_model, model_dir)
    cfg_path = model_dir / "tokenizer_config.json"
    tc = json.loads(cfg_path.read_text())
    tc["padding_side"] = padding_side
    cfg_path.write_text(json.dumps(tc))
    assert AutoTokenizer.from_pretrained(model_dir).padding_side == padding_side
    data = _jsonl(tmp_path / "pairs.jsonl", PAIRS)
    res = extract(_cfg(tmp_path, model_dir, data, pooling=pooling, batch_tokens=200, layers=(-1, 1)))
    store = open_store(tmp_path / "store")
    tok = AutoTokenizer.from_pretrained(model_dir)
    m = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    rows = [(p["prompt"], p[r]) for p in PAIRS for r in ("chosen", "rejected")]
    for layer in (-1, 1):
        got = store.load(res.model_hash, res.dataset_hash, layer=layer).vectors
        for i, (p, r) in enumerate(rows):
            ids = tok(p + r)["input_ids"]
            start = len(tok(p)["input_ids"])  # one token per character in this tokenizer
            with torch.inference_mode():
                out = m(input_ids=torch.tensor([ids]), output_hidden_states=True)
            h = (out.last_hidden_state if layer == -1 else out.hidden_states[layer])[0]
            want = h[-1] if pooling == "last" else h[start:].mean(0)
            np.testing.assert_allclose(got[i], want.numpy(), atol=2e-5)


def test_extract_matches_per_example_forward_and_restores_order(tmp_path, tiny_model):
    data = _jsonl(tmp_path / "pairs.jsonl", PAIRS)
    res = extract(_cfg(tmp_path, tiny_model, data, batch_tokens=64, window=3))
    assert (res.kind, res.rows, res.computed, res.cached, res.status) == ("pairwise", 8, 8, 0, "complete")
    emb = open_store(tmp_path / "store").load(res.model_hash, res.dataset_hash)
    texts = [p["prompt"] + p[r] for p in PAIRS for r in ("chosen", "rejected")]
    np.testing.assert_allclose(emb.vectors, _reference(tiny_model, texts), atol=2e-5)
    assert list(emb.role) == ["chosen", "rejected"] * 4 and list(emb.label) == [1.0, 0.0] * 4
    v, pids = emb.pairwise()
    assert v.shape == (4, 2, 32)


def test_cached_items_are_never_recomputed_and_all_cached_skips_the_model(tmp_path, tiny_model):
    a = _jsonl(tmp_path / "a.jsonl", PAIRS[:3])
    b = _jsonl(tmp_path / "b.jsonl", PAIRS[1:])
    r1 = extract(_cfg(tmp_path, tiny_model, a))
    r2 = extract(_cfg(tmp_path, tiny_model, b))
    assert (r2.computed, r2.cached, r2.model_loaded) == (2, 4, True)
    assert r1.model_hash == r2.model_hash and r1.dataset_hash != r2.dataset_hash
    c = _jsonl(tmp_path / "c.jsonl", [PAIRS[2], PAIRS[0]])
    r3 = extract(_cfg(tmp_path, tiny_model, c))
    assert (r3.computed, r3.cached, r3.model_loaded, r3.status) == (0, 4, False, "complete")
    store = open_store(tmp_path / "store")
    assert store.tables.get(S.vector_table(r1.model_hash)).count_rows() == 8
    r4 = extract(_cfg(tmp_path, tiny_model, a, pooling="mean"))  # another fingerprint: computed again
    assert r4.model_hash != r1.model_hash and r4.computed == 6


def test_duplicate_items_in_a_dataset_are_computed_once(tmp_path, tiny_model):
    recs = [{"prompt": "p", "response": "same"}, {"prompt": "q", "response": "x"}, {"prompt": "p", "response": "same"}]
    res = extract(_cfg(tmp_path, tiny_model, _jsonl(tmp_path / "d.jsonl", recs)))
    assert (res.computed, res.duplicates, res.skipped, res.status) == (2, 1, 0, "complete")
    emb = open_store(tmp_path / "store").load(res.model_hash, res.dataset_hash)
    np.testing.assert_array_equal(emb.vectors[0], emb.vectors[2])


@pytest.mark.parametrize("side,pooling", [("left", "last"), ("left", "mean"), ("right", "mean"), ("right", "last")])
def test_long_texts_cut_before_tokenising_give_the_vectors_of_the_whole_text(tiny_model, side, pooling):
    """A text far longer than max_length is cut by characters first; the tokens that
    truncation keeps, and so the vector, are those of the whole text."""
    from embrm.extractor.embedder import Embedder, EmbeddingSpec

    e = Embedder(EmbeddingSpec(model=str(tiny_model), dtype="float32", max_length=48, truncation_side=side,
                               pooling=pooling, input_format="raw"), "cpu")
    words = " ".join(f"word{i % 97}" for i in range(4000))
    prompts, responses = ["A prompt. " * 300, "", "short prompt"], [words, words[:2000], "short"]
    assert len(prompts[0]) + len(responses[0]) > 10 * e.clip_chars  # really cut
    whole = encode_batch(e.tokenizer, prompts, responses, "raw", 48, side, clip_chars=None)
    cut = e.encode(prompts, responses)
    assert [c.ids for c in cut] == [w.ids for w in whole] and [c.truncated for c in cut] == [True, True, False]
    assert [c.response_start for c in cut] == [w.response_start for w in whole]
    np.testing.assert_allclose(e.embed_encoded(cut).vectors[-1], e.embed_encoded(whole).vectors[-1], atol=1e-6)
    assert e.clip(prompts[0], responses[0]) != (prompts[0], responses[0])
    assert e.clip("short prompt", "short") == ("short prompt", "short")


def test_several_layers_from_one_pass_and_truncation_flags(tmp_path, tiny_model):
    data = _jsonl(tmp_path / "p.jsonl", PAIRS)
    res = extract(_cfg(tmp_path, tiny_model, data, layers=(-1, 1, 0), max_length=12, truncation_side="left"))
    store = open_store(tmp_path / "store")
    e = store.resolve(res.model_hash, res.dataset_hash)
    assert e.layers == (-1, 1, 0) and res.truncated == e.truncated > 0
    emb_last = store.load(res.model_hash, res.dataset_hash, layer=-1)
    emb_one = store.load(res.model_hash, res.dataset_hash, layer=1)
    assert emb_last.truncated.sum() == res.truncated and (emb_last.n_tokens > 12).sum() == res.truncated
    tok = AutoTokenizer.from_pretrained(tiny_model)
    m = AutoModel.from_pretrained(tiny_model, dtype=torch.float32).eval()
    text = PAIRS[0]["prompt"] + PAIRS[0]["chosen"]
    ids = torch.tensor([tok(text)["input_ids"][-12:]])
    with torch.inference_mode():
        out = m(input_ids=ids, output_hidden_states=True)
    np.testing.assert_allclose(emb_one.vectors[0], out.hidden_states[1][0, -1].numpy(), atol=2e-5)
    np.testing.assert_allclose(emb_last.vectors[0], out.last_hidden_state[0, -1].numpy(), atol=2e-5)
    with pytest.raises(EmbrmError, match="layer 5 was not extracted"):
        store.load(res.model_hash, res.dataset_hash, layer=5)


def test_chat_format_uses_template_and_template_enters_fingerprint(tmp_path, tiny_model):
    data = _jsonl(tmp_path / "p.jsonl", PAIRS[:1])
    raw = extract(_cfg(tmp_path, tiny_model, data))
    chat = extract(_cfg(tmp_path, tiny_model, data, input_format="chat"))
    store = open_store(tmp_path / "store")
    e = store.resolve(chat.model_hash, chat.dataset_hash)
    assert "<assistant>" in e.model_config["template"] and raw.model_hash != chat.model_hash
    text = f"<user>{PAIRS[0]['prompt']}</s><assistant>{PAIRS[0]['chosen']}</s>"
    tok = AutoTokenizer.from_pretrained(tiny_model)
    m = AutoModel.from_pretrained(tiny_model, dtype=torch.float32).eval()
    with torch.inference_mode():
        want = m(input_ids=torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])).last_hidden_state[0, -1]
    np.testing.assert_allclose(store.load(chat.model_hash, chat.dataset_hash).vectors[0], want.numpy(), atol=2e-5)


def test_bfloat16_vectors_are_close_to_float32(tmp_path, tiny_model):
    data = _jsonl(tmp_path / "p.jsonl", PAIRS)
    f32 = extract(_cfg(tmp_path, tiny_model, data))
    bf = extract(_cfg(tmp_path, tiny_model, data, dtype="bfloat16"))
    store = open_store(tmp_path / "store")
    a = store.load(f32.model_hash, f32.dataset_hash).vectors
    b = store.load(bf.model_hash, bf.dataset_hash).vectors
    assert b.dtype == np.float32 and f32.model_hash != bf.model_hash
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99


def test_bad_extraction_input_is_refused_and_store_untouched(tmp_path, tiny_model):
    data = _jsonl(tmp_path / "p.jsonl", PAIRS)
    with pytest.raises(EmbrmError, match="out of range: the model has 2 layers"):
        extract(_cfg(tmp_path, tiny_model, data, layers=(-1, 7)))
    store = open_store(tmp_path / "store")
    assert store.tables.names() == {"catalog", "embrm_meta"} and store.entries() == []  # nothing written
    with pytest.raises(EmbrmError, match="cannot tell the dataset's shape"):
        extract(_cfg(tmp_path, tiny_model, _jsonl(tmp_path / "x.jsonl", [{"question": "a", "answer": "b"}])))
    with pytest.raises(EmbrmError, match="neither a model directory"):
        extract(_cfg(tmp_path, Path("./no/such/dir"), data))
    with pytest.raises(EmbrmError, match="holds no weight files"):
        extract(_cfg(tmp_path, tmp_path, data))
    with pytest.raises(EmbrmError, match="does not exist"):
        extract(_cfg(tmp_path, tiny_model, tmp_path / "missing.jsonl"))
    bad_gguf = tmp_path / "broken.gguf"
    bad_gguf.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(EmbrmError, match="cannot load the tokenizer of .*broken.gguf"):
        extract(_cfg(tmp_path, bad_gguf, data))
    if not torch.cuda.is_available():
        with pytest.raises(EmbrmError, match="--device cuda was asked for but torch sees no CUDA"):
            extract(_cfg(tmp_path, tiny_model, data, device="cuda"))
    with pytest.raises(EmbrmError, match=r"record 1 has no column 'rejected'; its columns are \['chosen', 'prompt'\]"):
        extract(_cfg(tmp_path, tiny_model, _jsonl(tmp_path / "y.jsonl", [PAIRS[0], {"prompt": "a", "chosen": "b"}])))
    assert store.tables.names() == {"catalog", "embrm_meta"} and store.entries() == []


def test_non_string_text_errors_or_is_skipped_and_counted(tmp_path, tiny_model):
    recs = [PAIRS[0], {"prompt": "", "chosen": "", "rejected": "x"}, {**PAIRS[2], "chosen": 7}, PAIRS[3]]
    data = _jsonl(tmp_path / "bad.jsonl", recs)
    with pytest.raises(EmbrmError, match="record 1: prompt and response are both empty.*--skip-bad-rows"):
        extract(_cfg(tmp_path, tiny_model, data))
    res = extract(_cfg(tmp_path, tiny_model, data, skip_bad_rows=True))
    assert (res.rows, res.skipped, res.computed, res.status) == (4, 2, 4, "complete")
    emb = open_store(tmp_path / "store").load(res.model_hash, res.dataset_hash)
    assert len(set(emb.prompt_id)) == 2 and "skipped 2" in res.report()


@pytest.mark.parametrize("pooling", ["last", "mean", "mean-all"])
def test_empty_responses_and_prompts_are_embedded(tmp_path, tiny_model, pooling):
    """An empty reply (HH-RLHF has four) and an empty prompt (a plain text to embed) are
    real data: ``last`` and ``mean-all`` pool what is there, and ``mean`` over no response
    token is the last token's state, as documented."""
    recs = [{"prompt": "Tell me.", "chosen": "", "rejected": " No."}, {"prompt": "", "chosen": "Hi", "rejected": "Yo"}]
    res = extract(_cfg(tmp_path, tiny_model, _jsonl(tmp_path / "e.jsonl", recs), pooling=pooling))
    assert (res.computed, res.skipped, res.status) == (4, 0, "complete")
    got = open_store(tmp_path / "store").load(res.model_hash, res.dataset_hash).vectors
    texts = ["Tell me.", "Tell me. No.", "Hi", "Yo"]
    how = "last" if pooling == "mean" else pooling
    np.testing.assert_allclose(got[0], _reference(tiny_model, texts[:1], how)[0], atol=2e-5)
    starts = [len("Tell me."), 0, 0]
    np.testing.assert_allclose(got[1:], _reference(tiny_model, texts[1:], pooling, starts), atol=2e-5)


def test_cli_extract_prints_keys_and_counts(tmp_path, tiny_model):
    data = _jsonl(tmp_path / "p.jsonl", PAIRS)
    args = ["extract", "--model", str(tiny_model), "--dataset", str(data), "--dtype", "float32",
            "--store", str(tmp_path / "store"), "--quiet", "--limit", "3"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "computed 6   cached 0" in res.output and "dataset  p[:3]" in res.output
    assert "tiny-llama/float32" in res.output
    res = CliRunner().invoke(cli, args)
    assert "computed 0   cached 6" in res.output and "model not loaded" in res.output
    res = CliRunner().invoke(cli, [*args, "--layers", "x"])
    assert res.exit_code == 2 and "'--layers': 'x' must be comma-separated integers" in res.output




def test_sigkill_during_extraction_then_rerun_continues(tmp_path, tiny_model):
    recs = [{"prompt": f"Question number {i}?", "response": f" Answer {i * 7}."} for i in range(40)]
    data = _jsonl(tmp_path / "d.jsonl", recs)
    script = tmp_path / "run.py"
    script.write_text(EXTRACT_SCRIPT)
    store = tmp_path / "store"
    kill_after([str(script), str(data), str(tiny_model), str(store), "0.3"], "window", 3)
    out = subprocess.run([sys.executable, str(script), str(data), str(tiny_model), str(store), "0"],
                         capture_output=True, text=True, check=True).stdout
    computed, cached = map(int, out.split("done")[1].split())
    assert cached >= 12 and computed + cached == 40 and computed > 0
    st = open_store(store)
    [e] = st.entries()
    keys = st.vectors.cached(e.model_hash).to_pylist()
    assert len(keys) == len(set(keys)) == 40 and e.status == "complete"
    emb = st.load(e.model_hash, e.dataset_hash)
    want = _reference(tiny_model, [r["prompt"] + r["response"] for r in recs])
    np.testing.assert_allclose(emb.vectors, want, atol=2e-5)
