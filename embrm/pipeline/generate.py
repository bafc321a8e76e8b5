"""``embrm generate``: sample K responses per prompt from a causal LM.

Writes a multi-response dataset (``prompt``, ``responses[K]``) that ``embrm extract``
reads directly. Progress goes to ``<out>.partial.jsonl`` one prompt per line, flushed as
each batch finishes, so a killed run resumes where it stopped; the final file (JSONL or
Parquet by suffix) appears atomically when every prompt is done.

Sampling is seeded per batch from (seed, index of the batch's first prompt), so a re-run
of the same command reproduces the same responses. The decoding loop is
:func:`embrm.pipeline.sampling.sample_responses` (one prefill per prompt, top-k sampling).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embrm.errors import EmbrmError
from embrm.pipeline.files import PartialFile, read_records

BUILTIN_PROMPTS = Path(__file__).resolve().parents[1] / "data" / "demo_prompts.txt"


@dataclass
class GenerateConfig:
    prompts: str  # a .txt (one prompt a line), .jsonl/.json/.parquet/.csv with a prompt column, or "builtin"
    out: str
    model: str | None = None
    revision: str | None = None
    k: int = 8
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 50  # transformers' generate default, now explicit
    max_new_tokens: int = 64
    min_new_tokens: int = 1  # an immediate end-of-sequence gives an empty response, which extract refuses
    seed: int = 0
    batch_prompts: int = 32  # 32 x K sequences a batch: larger GEMMs, fewer steps
    dtype: str = "auto"
    device: str = "auto"
    prompt_column: str = "prompt"
    limit: int | None = None
    quiet: bool = False
    trust_remote_code: bool = False


def load_prompts(source: str, column: str = "prompt", limit: int | None = None) -> list[str]:
    path = BUILTIN_PROMPTS if source == "builtin" else Path(source)
    if not path.exists():
        raise EmbrmError(f"prompt file {source} does not exist")
    if path.suffix == ".txt":
        prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                   if line.strip() and not line.startswith("#")]
    else:
        recs = read_records(path)
        if recs and column not in recs[0]:
            raise EmbrmError(f"{path.name} has no {column!r} column; pass --prompt-column")
        prompts = [str(r[column]) for r in recs]
    if not prompts:
        raise EmbrmError(f"{source} holds no prompts")
    return prompts[:limit] if limit else prompts


def generate(cfg: GenerateConfig, on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Generate and write the dataset; returns counts. Safe to kill and re-run."""
    import torch

    from embrm.extractor.models import load_pretrained, load_tokenizer, resolve_dtype, resolve_model
    from embrm.hardware import resolve_device
    from embrm.pipeline.sampling import sample_responses

    if cfg.k < 1 or cfg.max_new_tokens < 1:
        raise EmbrmError("--k and --max-new-tokens must be positive")
    out = Path(cfg.out)
    if out.suffix not in (".jsonl", ".parquet"):
        raise EmbrmError(f"--out {out.name}: use a .jsonl or .parquet file name")
    prompts = load_prompts(cfg.prompts, cfg.prompt_column, cfg.limit)
    t0 = time.perf_counter()
    if out.exists():
        done = {r["prompt"] for r in read_records(out)}
        if set(prompts) <= done:
            return {"prompts": len(prompts), "generated": 0, "reused": len(prompts), "seconds": 0.0, "out": str(out)}
    partial = PartialFile(out, "")
    have = {r["prompt"]: r["responses"] for r in partial.read() if len(r.get("responses", [])) == cfg.k}
    todo = [i for i, p in enumerate(prompts) if p not in have]
    generated = 0
    if todo:
        src = resolve_model(cfg.model, cfg.revision)
        device = resolve_device(cfg.device)
        dtype = resolve_dtype(cfg.dtype, device)
        tok = load_tokenizer(src, cfg.trust_remote_code)
        tok.padding_side = "left"  # decoder-only generation continues from the right edge
        model = load_pretrained(src, "AutoModelForCausalLM", dtype, device, cfg.trust_remote_code)
        use_chat = bool(getattr(tok, "chat_template", None))
        bar = None
        if not cfg.quiet:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(prompts), initial=len(prompts) - len(todo), unit="prompt", desc="generate")
        try:
            for s in range(0, len(todo), cfg.batch_prompts):
                idx = todo[s:s + cfg.batch_prompts]
                batch = [prompts[i] for i in idx]
                texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True) if use_chat else p for p in batch]
                enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not use_chat).to(device)
                torch.manual_seed(cfg.seed * 1_000_003 + idx[0])
                with torch.inference_mode():
                    new = sample_responses(model, tok, enc["input_ids"], enc["attention_mask"], cfg.k,
                                           cfg.max_new_tokens, cfg.min_new_tokens, cfg.temperature, cfg.top_p,
                                           cfg.top_k)
                texts_out = tok.batch_decode(new, skip_special_tokens=True)
                done = []
                for j, p in enumerate(batch):
                    have[p] = [t.strip() for t in texts_out[j * cfg.k:(j + 1) * cfg.k]]
                    done.append({"prompt": p, "responses": have[p]})
                partial.append(done)
                generated += len(batch)
                if bar is not None:
                    bar.update(len(batch))
                if on_batch:
                    on_batch(len(batch))
        finally:
            partial.close()
            if bar is not None:
                bar.close()
    partial.finish([{"prompt": p, "responses": have[p]} for p in prompts])
    return {"prompts": len(prompts), "generated": generated, "reused": len(prompts) - generated,
            "seconds": time.perf_counter() - t0, "out": str(out)}
