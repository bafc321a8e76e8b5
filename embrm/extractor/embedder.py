"""The extraction seam: an :class:`Embedder` turns (prompt, response) lists into vectors.

Every front end embeds through this one class: the local extraction loop, the HTTP
service's batcher and the Ray engine's actors. It owns model loading, tokenisation,
token-budget batching, the forward pass and pooling, and the model fingerprint that
says which vectors are the same, so none of that exists twice.

An :class:`EmbeddingSpec` names an embedding: everything in it that changes a vector
enters the fingerprint. How to run it (device, batch budget) does not.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from embrm.errors import EmbrmError
from embrm.extractor.formatting import FORMATS, Encoded, clip_texts, encode_batch, template_text
from embrm.extractor.models import (
    ModelSource,
    load_pretrained,
    load_tokenizer,
    resolve_dtype,
    resolve_model,
)
from embrm.extractor.pooling import POOLINGS
from embrm.hardware import resolve_device
from embrm.store.keys import ModelFingerprint

CPU_BATCH_TOKENS = 2048  # padded tokens per forward batch; measured best on the 2-core dev CPU
GPU_BATCH_TOKENS = 32768


@dataclass(frozen=True)
class EmbeddingSpec:
    """What names an embedding. Resolved (model pinned, dtype chosen), it is the model
    fingerprint. ``trust_remote_code`` is a permission to load, not part of the name."""

    model: str | None = None  # None: the packaged SmolLM2-135M-Instruct GGUF
    revision: str | None = None
    input_format: str = "raw"
    pooling: str = "last"
    layers: tuple[int, ...] = (-1,)
    dtype: str = "auto"
    max_length: int = 1024
    truncation_side: str = "left"
    trust_remote_code: bool = False

    @classmethod
    def of_catalog(cls, cfg: dict[str, Any]) -> EmbeddingSpec:
        """The spec an entry's ``model_config`` (:meth:`Embedder.catalog_config`) was made
        with: how a reward model finds the embedding it was trained on, to embed new
        texts the same way. The packaged default model is named by its hub id there."""
        from embrm.extractor.models import DEFAULT_HUB_ID

        try:
            default = cfg["kind"] == "gguf" and cfg["source"] == DEFAULT_HUB_ID
            return cls(model=None if default else cfg["source"], revision=cfg.get("revision"),
                       input_format=cfg["input_format"], pooling=cfg["pooling"], layers=tuple(cfg["layers"]),
                       dtype=cfg["dtype"], max_length=int(cfg["max_length"]),
                       truncation_side=cfg["truncation_side"])
        except (KeyError, TypeError, ValueError):
            raise EmbrmError("the model configuration recorded for this embedding is incomplete; extract the "
                             "new texts with `embrm extract` and score them with --dataset-key") from None

    def validate(self) -> None:
        if self.input_format not in FORMATS:
            raise EmbrmError(f"unknown --format {self.input_format!r}; use one of {', '.join(FORMATS)}")
        if self.pooling not in POOLINGS:
            raise EmbrmError(f"unknown --pooling {self.pooling!r}; use one of {', '.join(POOLINGS)}")
        if self.truncation_side not in ("left", "right"):
            raise EmbrmError("--truncation-side must be left or right")
        if self.max_length < 2:
            raise EmbrmError("--max-length must be at least 2")
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise EmbrmError("--layers must list distinct layer indices, e.g. -1,-8,15")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise EmbrmError(f"unknown --dtype {self.dtype!r}; use auto, float32, bfloat16 or float16")


@dataclass
class Embedded:
    """Vectors of a list of items, in the items' order."""

    vectors: dict[int, np.ndarray]  # layer -> (n, dim) float32
    n_tokens: np.ndarray  # (n,) tokens before truncation
    truncated: np.ndarray  # (n,) bool
    tokens: int  # real (non-pad) tokens that went through the model


class Embedder:
    """A model that embeds (prompt, response) items under one fingerprint.

    Cheap to build: it pins the model (hub commit or weight hash) and resolves device
    and dtype, but loads the tokenizer only when asked for the fingerprint of a chat
    format or for tokens, and the weights only at :meth:`load` or the first
    :meth:`embed`, so a fully cached dataset never loads them.
    """

    def __init__(self, spec: EmbeddingSpec, device: str = "auto", batch_tokens: int | None = None,
                 source: ModelSource | None = None):
        spec.validate()
        if batch_tokens is not None and batch_tokens < 1:
            raise EmbrmError("--batch-tokens must be positive")
        self.device = resolve_device(device)
        self.spec = replace(spec, dtype=resolve_dtype(spec.dtype, self.device))
        self.source = source or resolve_model(spec.model, spec.revision)
        self.batch_tokens = batch_tokens or (CPU_BATCH_TOKENS if self.device == "cpu" else GPU_BATCH_TOKENS)
        self._tok: Any = None
        self._model: Any = None
        self._clip: int | None = None
        self._fp: ModelFingerprint | None = None

    # ------------------------------------------------------------- identity
    @property
    def fingerprint(self) -> ModelFingerprint:
        if self._fp is None:
            s = self.spec
            template = template_text(self.tokenizer, "chat") if s.input_format == "chat" else ""
            self._fp = ModelFingerprint(self.source.source, self.source.weights, s.dtype, s.pooling, tuple(s.layers),
                                        s.max_length, s.truncation_side, s.input_format, template,
                                        name_hint=self.source.name)
        return self._fp

    @property
    def model_hash(self) -> str:
        return self.fingerprint.hash

    @property
    def model_name(self) -> str:
        return self.fingerprint.name

    def catalog_config(self) -> dict[str, Any]:
        """The fingerprint plus how the weights were found, as the catalog records it."""
        src = self.source
        return {**self.fingerprint.as_dict(), "kind": src.kind, "revision": src.revision, "gguf_file": src.gguf_file}

    # ---------------------------------------------------------------- model
    @property
    def tokenizer(self) -> Any:
        if self._tok is None:
            self._tok = load_tokenizer(self.source, self.spec.trust_remote_code)
        return self._tok

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> Embedder:
        """Load tokenizer and weights now, so a bad model or layer fails before any write."""
        if self._model is not None:
            return self
        tok = self.tokenizer
        model = load_pretrained(self.source, "AutoModel", self.spec.dtype, self.device, self.spec.trust_remote_code)
        n_layers = int(getattr(model.config, "num_hidden_layers", 0) or 0)
        bad = [x for x in self.spec.layers if n_layers and not -(n_layers + 1) <= x <= n_layers]
        if bad:
            raise EmbrmError(f"layer(s) {bad} out of range: the model has {n_layers} layers "
                             f"(valid: -{n_layers + 1}..{n_layers}, 0 = embeddings)")
        self._tok, self._model = tok, model
        return self

    @property
    def dim(self) -> int:
        return int(self.load()._model.config.hidden_size)

    # ---------------------------------------------------------------- embed
    @property
    def clip_chars(self) -> int:
        """Characters of an item beyond which its text is cut before tokenising: twice what
        ``max_length`` tokens of the longest token in the vocabulary can span, so the
        tokens that truncation keeps are the same (:func:`~embrm.extractor.formatting.clip_texts`)."""
        if self._clip is None:
            longest = max((len(t) for t in self.tokenizer.get_vocab()), default=1)
            self._clip = 2 * self.spec.max_length * max(4, longest)
        return self._clip

    def clip(self, prompt: str, response: str) -> tuple[str, str]:
        """The part of an item's texts that is embedded (what the service keeps)."""
        return clip_texts(prompt, response, self.clip_chars, self.spec.truncation_side)

    def encode(self, prompts: list[str], responses: list[str]) -> list[Encoded]:
        """Token ids of each item as the model will see them (formatted, cut, truncated)."""
        s = self.spec
        return encode_batch(self.tokenizer, prompts, responses, s.input_format, s.max_length, s.truncation_side,
                            self.clip_chars)

    def batches(self, enc: list[Encoded]) -> list[list[int]]:
        """The forward batches of encoded items: length-sorted, within the token budget.
        The one place items are cut into batches, for every caller (the service's model
        thread plans a job window with it, then runs one batch at a time)."""
        from embrm.extractor.batching import token_budget_batches

        return token_budget_batches([len(e.ids) for e in enc], self.batch_tokens)

    def embed(self, prompts: list[str], responses: list[str]) -> Embedded:
        """Vectors per layer for the items, in their order."""
        if len(prompts) != len(responses):
            raise EmbrmError(f"{len(prompts)} prompts for {len(responses)} responses")
        return self.embed_encoded(self.encode(prompts, responses))

    def embed_encoded(self, enc: list[Encoded], batches: list[list[int]] | None = None) -> Embedded:
        """Vectors of already encoded items: one forward pass per batch (default:
        :meth:`batches`), pooled, with one device sync at the end."""
        import torch

        from embrm.extractor.batching import pad_batch
        from embrm.extractor.pooling import pool

        self.load()
        if any(not e.ids for e in enc):
            raise EmbrmError("an item encodes to no tokens at all; give it a prompt or a response")
        layers, device, model, tok = self.spec.layers, self.device, self._model, self._tok
        lengths = [len(e.ids) for e in enc]
        n = len(enc)
        outs = {x: torch.empty((n, model.config.hidden_size), dtype=torch.float32, device=device) for x in layers}
        want_all = any(x != -1 for x in layers)
        pin = device == "cuda"
        with torch.inference_mode():
            for batch in batches if batches is not None else self.batches(enc):
                # honour the tokenizer's padding side; pooling is correct under either
                ids, mask = pad_batch([enc[i].ids for i in batch], int(tok.pad_token_id),
                                      left=tok.padding_side == "left")
                start = torch.tensor([enc[i].response_start for i in batch])
                if pin:
                    ids, mask, start = ids.pin_memory(), mask.pin_memory(), start.pin_memory()
                ids = ids.to(device, non_blocking=True)
                mask = mask.to(device, non_blocking=True)
                start = start.to(device, non_blocking=True)
                idx = torch.tensor(batch)
                if pin:
                    idx = idx.pin_memory()
                idx = idx.to(device, non_blocking=True)  # no blocking copy between forward passes
                out = model(input_ids=ids, attention_mask=mask, output_hidden_states=want_all, use_cache=False)
                for x in layers:
                    h = out.last_hidden_state if x == -1 else out.hidden_states[x]
                    outs[x][idx] = pool(h, mask, start, self.spec.pooling)
        vectors = {x: v.cpu().numpy() for x, v in outs.items()}  # one device sync per call
        return Embedded(vectors, np.array([e.n_tokens for e in enc], dtype=np.int64),
                        np.array([e.truncated for e in enc], dtype=bool), int(sum(lengths)))
