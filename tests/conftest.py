"""Shared fixtures: real LanceDB stores in tmp_path, tiny real transformers models."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
HH_RLHF = SHARED / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# dense copies of GGUF models (embrm.extractor.dense): one folder for the session, never ~/.cache
_MODEL_CACHE = None if "EMBRM_MODEL_CACHE" in os.environ else tempfile.mkdtemp(prefix="embrm-models-")
if _MODEL_CACHE:
    os.environ["EMBRM_MODEL_CACHE"] = _MODEL_CACHE


def pytest_sessionfinish(session, exitstatus) -> None:
    """The session's dense model copies (a few hundred MB) go with it."""
    if _MODEL_CACHE:
        shutil.rmtree(_MODEL_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True)
def _private_load_cache(tmp_path_factory, monkeypatch) -> None:
    """Each test's load materialisations go to a folder of its own, never ~/.cache."""
    monkeypatch.setenv("EMBRM_CACHE", str(tmp_path_factory.mktemp("embrm-cache")))


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def py() -> str:
    return sys.executable


def build_tiny_model(path: Path, vocab_words: list[str] | None = None, layers: int = 2, hidden: int = 32) -> Path:
    """A randomly initialised 2-layer Llama with a real fast tokenizer and chat template,
    saved with save_pretrained, so the real loading code runs in seconds."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = vocab_words or []
    alphabet = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for tok in alphabet + words:
        vocab.setdefault(tok, len(vocab))
    tk = Tokenizer(models.WordPiece(vocab=vocab, unk_token="<unk>", max_input_chars_per_word=1000))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")  # one token per character
    tk.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
                          "{% if add_generation_prompt %}<assistant>{% endif %}")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


# A real extraction process for crash tests: it prints each committed window and sleeps after it.
EXTRACT_SCRIPT = """
import sys
from embrm.extractor import DatasetSpec, EmbeddingSpec, ExtractConfig, RunOptions, extract
cfg = ExtractConfig(DatasetSpec(sys.argv[1]), EmbeddingSpec(model=sys.argv[2], dtype="float32"),
                    RunOptions(store=sys.argv[3], window=4, quiet=True))
def slow(n):
    print("window", n, flush=True)
    import time; time.sleep(float(sys.argv[4]))
res = extract(cfg, on_window=slow)
print("done", res.computed, res.cached, flush=True)
"""


def extract_config(dataset, model=None, store=None, **kw):
    """An ExtractConfig from flat keyword arguments, as the tests like to write them."""
    from dataclasses import fields

    from embrm.extractor.datasets import DatasetSpec
    from embrm.extractor.embedder import EmbeddingSpec
    from embrm.extractor.extraction import ExtractConfig, RunOptions

    parts = {}
    for cls in (DatasetSpec, EmbeddingSpec, RunOptions):
        names = {f.name for f in fields(cls)}
        parts[cls] = {k: kw.pop(k) for k in list(kw) if k in names}
    assert not kw, f"unknown options {kw}"
    emb = parts[EmbeddingSpec]
    if model is not None:
        emb["model"] = str(model)
    run = parts[RunOptions]
    if store is not None:
        run["store"] = str(store)
    return ExtractConfig(DatasetSpec(str(dataset), **parts[DatasetSpec]), EmbeddingSpec(**emb), RunOptions(**run))


def store_entry(path, x, r, model="synthetic-model", dataset="synthetic-data"):
    """A multi-response store entry of vectors ``x`` (P*K, D) with golden rewards ``r`` (P, K)."""
    import numpy as np

    from embrm.store import item_key, open_store

    p, k = r.shape
    store = open_store(path, create=True)
    rows = [{"position": i, "item_key": item_key(f"p{i // k}", f"r{i}"), "prompt_id": i // k,
             "response_index": i % k, "role": "", "label": None, "reward": float(r.reshape(-1)[i]),
             "prompt": f"p{i // k}", "response": f"r{i}"} for i in range(p * k)]
    store.rows.write("d" * 64, rows, len(rows))
    store.begin_entry("m" * 64, model, {}, "d" * 64, dataset, {}, "multi", len(rows))
    store.writer.write("m" * 64, [r_["item_key"] for r_ in rows], {-1: x}, np.ones(len(rows)),
                        np.zeros(len(rows), bool))
    store.finish_entry("m" * 64, "d" * 64)
    return store


from s3server import S3Server  # noqa: E402


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    pytest.importorskip("moto")
    server = S3Server(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, request):
    """The environment of a user of ``s3://embrm/<test>``: the standard AWS variables."""
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    s3_server.uri = f"s3://embrm/{request.node.name[:40]}"
    return s3_server
