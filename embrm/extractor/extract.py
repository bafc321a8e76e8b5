"""The extraction loop: dataset -> missing items -> batched forward passes -> store.

1. Read the dataset once to fingerprint it (content hash of the normalised rows) and
   to key its items.
2. Pin the model (hub commit or weight-file hash) and build the model fingerprint. If
   any item lacks a vector, load the tokenizer and model now, so that a bad model,
   tokenizer or layer fails before anything is written.
3. Write the dataset's rows table (idempotent) and open a catalog entry.
4. Scan the rows table in windows; drop items this model already has a vector for,
   whichever dataset they came from. If nothing is missing the model is never loaded.
5. Tokenize each window, pack length-sorted token-budget batches, run the base model,
   pool, and commit the window's vectors (in position order) as one store write.

A crash loses at most one window; re-running the same command continues from there.
Memory stays flat in the dataset size apart from the item keys (32 bytes a row): rows
stream from disk, and vectors leave per window.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embrm.errors import EmbrmError
from embrm.extractor.batching import pad_batch, token_budget_batches
from embrm.extractor.datasets import Columns, DatasetSpec, dataset_kind, iter_rows
from embrm.extractor.formatting import FORMATS, encode_batch, template_text
from embrm.extractor.models import (load_model, load_tokenizer, resolve_device, resolve_dtype,
                                    resolve_model)
from embrm.extractor.pooling import POOLINGS, pool
from embrm.store import DatasetHasher, ModelFingerprint, item_key, open_store
from embrm.store import schema as S
from embrm.store.keys import short
from embrm.store.store import Store


@dataclass
class ExtractConfig:
    """Every option of ``embrm extract``; equal configs give equal fingerprints."""

    dataset: str
    model: str | None = None  # None: the embedded SmolLM2-135M-Instruct GGUF
    revision: str | None = None
    split: str = "train"
    config: str | None = None
    dataset_revision: str | None = None
    columns: Columns = field(default_factory=Columns)
    limit: int | None = None
    input_format: str = "raw"
    pooling: str = "last"
    layers: tuple[int, ...] = (-1,)
    dtype: str = "auto"
    device: str = "auto"
    max_length: int = 1024
    truncation_side: str = "left"
    batch_tokens: int | None = None  # None: 2048 on CPU (measured best here), 32768 on GPUs
    window: int = 1024
    store: str | None = None
    quiet: bool = False
    trust_remote_code: bool = False
    skip_bad_rows: bool = False

    def validate(self) -> None:
        if self.input_format not in FORMATS:
            raise EmbrmError(f"unknown --format {self.input_format!r}; use one of {', '.join(FORMATS)}")
        if self.pooling not in POOLINGS:
            raise EmbrmError(f"unknown --pooling {self.pooling!r}; use one of {', '.join(POOLINGS)}")
        if self.truncation_side not in ("left", "right"):
            raise EmbrmError("--truncation-side must be left or right")
        if self.max_length < 2:
            raise EmbrmError("--max-length must be at least 2")
        if (self.batch_tokens is not None and self.batch_tokens < 1) or self.window < 1:
            raise EmbrmError("--batch-tokens and --window must be positive")
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise EmbrmError("--layers must list distinct layer indices, e.g. -1,-8,15")
        if self.limit is not None and self.limit < 1:
            raise EmbrmError("--limit must be a positive number of records")


@dataclass
class ExtractResult:
    model_name: str
    model_hash: str
    dataset_name: str
    dataset_hash: str
    kind: str
    rows: int
    computed: int
    cached: int
    skipped: int  # bad records skipped with skip_bad_rows
    duplicates: int  # rows whose item appeared earlier in this dataset (computed once)
    truncated: int
    tokens: int
    seconds: float
    compute_seconds: float
    model_loaded: bool
    status: str

    def report(self) -> str:
        tps = self.tokens / self.compute_seconds if self.compute_seconds else 0.0
        return "\n".join([
            f"model    {self.model_name}  [{short(self.model_hash)}]",
            f"dataset  {self.dataset_name}  [{short(self.dataset_hash)}]  ({self.kind}, {self.rows} rows)",
            f"computed {self.computed}   cached {self.cached}   duplicates {self.duplicates}   "
            f"truncated {self.truncated}   skipped {self.skipped}   status {self.status}",
            f"time     {self.seconds:.1f} s" + (f"   {tps:,.0f} tok/s in forward passes" if self.model_loaded
                                                else "   (all cached: model not loaded)"),
        ])


def parse_layers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise EmbrmError(f"--layers {text!r} must be comma-separated integers, e.g. -1,-8,15") from None


def _keyed_rows(spec: DatasetSpec) -> Iterator[dict[str, Any]]:
    for pos, r in enumerate(iter_rows(spec)):
        yield {**r, "position": pos, "item_key": item_key(r["prompt"], r["response"])}


class _Runner:
    """Holds the loaded model and tokenizer for one extraction."""

    def __init__(self, cfg: ExtractConfig, src: Any, device: str, dtype: str):
        self.cfg, self.src, self.device, self.dtype = cfg, src, device, dtype
        self.tok: Any = None
        self.model: Any = None

    def tokenizer(self) -> Any:
        if self.tok is None:
            self.tok = load_tokenizer(self.src, self.cfg.trust_remote_code)
        return self.tok

    def ensure_model(self) -> None:
        if self.model is not None:
            return
        self.model = load_model(self.src, self.dtype, self.device, self.cfg.trust_remote_code)
        n_layers = int(getattr(self.model.config, "num_hidden_layers", 0) or 0)
        bad = [l for l in self.cfg.layers if n_layers and not -(n_layers + 1) <= l <= n_layers]
        if bad:
            raise EmbrmError(f"layer(s) {bad} out of range: the model has {n_layers} layers "
                             f"(valid: -{n_layers + 1}..{n_layers}, 0 = embeddings)")

    def embed(self, prompts: list[str], responses: list[str]) -> tuple[dict[int, np.ndarray], np.ndarray, np.ndarray, int]:
        """Vectors per layer for a window of rows, in the rows' order."""
        import torch

        cfg = self.cfg
        enc = encode_batch(self.tokenizer(), prompts, responses, cfg.input_format, cfg.max_length, cfg.truncation_side)
        self.ensure_model()
        lengths = [len(e.ids) for e in enc]
        pad = int(self.tok.pad_token_id)
        n = len(enc)
        outs = {l: torch.empty((n, self.model.config.hidden_size), dtype=torch.float32, device=self.device)
                for l in cfg.layers}
        want_all = any(l != -1 for l in cfg.layers)
        pin = self.device == "cuda"
        with torch.inference_mode():
            budget = cfg.batch_tokens or (2048 if self.device == "cpu" else 32768)
            for batch in token_budget_batches(lengths, budget):
                # honour the tokenizer's padding side; pooling is correct under either
                ids, mask = pad_batch([enc[i].ids for i in batch], pad, left=self.tok.padding_side == "left")
                start = torch.tensor([enc[i].response_start for i in batch])
                if pin:
                    ids, mask, start = ids.pin_memory(), mask.pin_memory(), start.pin_memory()
                ids = ids.to(self.device, non_blocking=True)
                mask = mask.to(self.device, non_blocking=True)
                start = start.to(self.device, non_blocking=True)
                out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=want_all, use_cache=False)
                idx = torch.tensor(batch, device=self.device)
                for l in cfg.layers:
                    h = out.last_hidden_state if l == -1 else out.hidden_states[l]
                    outs[l][idx] = pool(h, mask, start, cfg.pooling)
        vecs = {l: v.cpu().numpy() for l, v in outs.items()}  # one device sync per window
        return (vecs, np.array([e.n_tokens for e in enc]), np.array([e.truncated for e in enc]),
                int(sum(lengths)))


def extract(cfg: ExtractConfig, store: Store | None = None,
            on_window: Callable[[int], None] | None = None) -> ExtractResult:
    """Extract one vector per (prompt, response) of ``cfg.dataset`` into the store.

    Vectors already stored under this model fingerprint are reused, from any dataset;
    if every item is cached the model weights are never loaded. ``on_window`` (for
    tests) is called after each committed window with the number of rows written.
    """
    t0 = time.perf_counter()
    cfg.validate()
    spec = DatasetSpec(cfg.dataset, cfg.split, cfg.config, cfg.dataset_revision, cfg.limit, cfg.columns,
                       cfg.skip_bad_rows)
    kind = dataset_kind(spec)
    hasher = DatasetHasher()
    stats: dict[str, int] = {}
    key_chunks: list[pa.Array] = []
    buf: list[str] = []
    for r in iter_rows(spec, stats):
        hasher.update(r)
        buf.append(item_key(r["prompt"], r["response"]))
        if len(buf) == 65536:
            key_chunks.append(pa.array(buf, pa.string()))
            buf = []
    key_chunks.append(pa.array(buf, pa.string()))
    if hasher.count == 0:
        raise EmbrmError(f"dataset {cfg.dataset} has no usable rows")
    n_rows, dataset_hash = hasher.count, hasher.hexdigest()

    src = resolve_model(cfg.model, cfg.revision)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    runner = _Runner(cfg, src, device, dtype)
    template = template_text(runner.tokenizer(), "chat") if cfg.input_format == "chat" else ""
    fp = ModelFingerprint(src.source, src.weights, dtype, cfg.pooling, tuple(cfg.layers), cfg.max_length,
                          cfg.truncation_side, cfg.input_format, template, name_hint=src.name)
    model_hash = fp.hash
    config = {**fp.as_dict(), "kind": src.kind, "revision": src.revision, "gguf_file": src.gguf_file}

    store = store or open_store(cfg.store, create=True)
    cached_keys = store.cached_keys(model_hash)
    all_keys = pa.chunked_array(key_chunks, pa.string())
    if not pc.all(pc.is_in(all_keys, value_set=cached_keys)).as_py():
        # something must be computed: load now, so a bad model, tokenizer or layer fails
        # before anything is written
        runner.tokenizer()
        runner.ensure_model()
    del all_keys, key_chunks
    store.write_dataset_rows(dataset_hash, _keyed_rows(spec), n_rows)
    store.begin_entry(model_hash, fp.name, config, dataset_hash, spec.name, spec.display(), kind, n_rows)
    done: set[str] = set()
    computed = cached = duplicates = tokens = 0
    bar = _progress(n_rows, cfg.quiet)
    ds = store.table(S.dataset_table(dataset_hash)).to_lance()
    compute_s = 0.0
    for batch in ds.to_batches(columns=["item_key", "prompt", "response"], batch_size=cfg.window):
        keys = batch.column("item_key")
        is_cached = pc.is_in(keys, value_set=cached_keys).to_numpy(zero_copy_only=False)
        keys_py = keys.to_pylist()
        todo: dict[str, int] = {}
        for i, k in enumerate(keys_py):
            if is_cached[i]:
                cached += 1
            elif k in done or k in todo:
                duplicates += 1
            else:
                todo[k] = i
        if todo:
            sel = pa.array(list(todo.values()))
            prompts = batch.column("prompt").take(sel).to_pylist()
            responses = batch.column("response").take(sel).to_pylist()
            tc = time.perf_counter()
            vecs, n_tok, trunc, ntok = runner.embed(prompts, responses)
            compute_s += time.perf_counter() - tc
            store.write_vectors(model_hash, list(todo), vecs, n_tok, trunc)
            done.update(todo)
            computed += len(todo)
            tokens += ntok
            if on_window:
                on_window(len(todo))
        if bar is not None:
            bar.update(len(keys_py))
            bar.set_postfix(tok_s=f"{tokens / compute_s:,.0f}" if compute_s else "-", cached=cached, refresh=False)
    if bar is not None:
        bar.close()
    entry = store.finish_entry(model_hash, dataset_hash)
    return ExtractResult(fp.name, model_hash, spec.name, dataset_hash, kind, n_rows, computed, cached,
                         stats["skipped"], duplicates,
                         entry.truncated, tokens, time.perf_counter() - t0, compute_s, runner.model is not None, entry.status)


def _progress(total: int, quiet: bool) -> Any:
    if quiet:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="row", desc="extract", dynamic_ncols=True)

