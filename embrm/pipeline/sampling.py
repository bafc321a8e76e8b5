"""Sampling K responses per prompt from a causal LM: the decoding loop ``generate`` uses.

transformers' ``generate`` was measured spending most of its time outside the model on
the 2-core CPUs embrm targets (an AVX2 machine emulated on the dev Xeon, fp32, 128
sequences): a quarter of a decoding step went to sampling over the full 49,152-token
vocabulary (an exponential draw per token for ``multinomial``, a full sort for top-p),
and the prompt's prefill ran once per returned sequence. This loop

* runs each prompt's prefill once and repeats its key/value cache K times;
* samples from the top-k tokens only (k = 50, ``generate``'s default): temperature, then
  top-k, then top-p, then a draw, the same distribution as transformers' warpers in that
  order (tested), at a cost that does not grow with the vocabulary;
* stops as soon as every sequence has ended.

On the emulated AVX2 CPU it generated 2.0-2.5x the tokens per second of ``generate`` with
the same settings (``benchmarks/bench_generate.py``).
"""
from __future__ import annotations

import inspect
from typing import Any

import torch


def sampling_probs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, token ids) of the candidates, (rows, k) each: logits / temperature,
    the top ``k``, then the smallest prefix of them whose mass reaches ``top_p``."""
    k = min(top_k, logits.shape[-1]) if top_k > 0 else logits.shape[-1]
    values, ids = torch.topk(logits.float() / temperature, k, dim=-1)  # sorted, largest first
    p = torch.softmax(values, -1)
    before = p.cumsum(-1) - p  # mass of the better candidates
    p = p.masked_fill(before >= top_p, 0.0)  # the first candidate always stays
    return p / p.sum(-1, keepdim=True), ids


def sample(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: Any = None
           ) -> torch.Tensor:
    p, ids = sampling_probs(logits, temperature, top_k, top_p)
    return ids.gather(1, torch.multinomial(p, 1, generator=generator)).squeeze(1)


def stop_ids(tok: Any, model: Any) -> list[int]:
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    extra = getattr(model.generation_config, "eos_token_id", None)
    ids |= set(extra if isinstance(extra, list) else [extra] if extra is not None else [])
    return sorted(i for i in ids if i is not None)


def sample_responses(model: Any, tok: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int,
                     max_new_tokens: int, min_new_tokens: int = 1, temperature: float = 0.8, top_p: float = 0.95,
                     top_k: int = 50) -> list[list[int]]:
    """K continuations of each left-padded prompt: ``len(prompts) * k`` token lists, the
    k of prompt 0 first. Call under ``torch.inference_mode()`` after seeding torch."""
    from transformers import DynamicCache

    eos = torch.tensor(stop_ids(tok, model), dtype=torch.long, device=input_ids.device)
    pad = tok.pad_token_id if tok.pad_token_id is not None else int(eos[0])
    cache = DynamicCache()
    # transformers renamed `past_key_values` to `cache` (the old name is deprecated from 5.x)
    ckw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    pos = (attention_mask.cumsum(1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos, use_cache=True,
                logits_to_keep=1, **{ckw: cache})
    logits = out.logits[:, -1].repeat_interleave(k, 0)
    cache.batch_repeat_interleave(k)  # one prefill per prompt, shared by its k sequences
    mask = attention_mask.repeat_interleave(k, 0)
    done = torch.zeros(len(mask), dtype=torch.bool, device=mask.device)
    steps: list[torch.Tensor] = []
    for step in range(max_new_tokens):
        if step < min_new_tokens and len(eos):
            logits[:, eos] = -float("inf")
        nxt = sample(logits, temperature, top_k, top_p)
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        steps.append(nxt)
        done |= torch.isin(nxt, eos)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=mask.sum(1, keepdim=True) - 1,
                    use_cache=True, **{ckw: cache})
        logits = out.logits[:, -1]
    tokens = torch.stack(steps, 1).tolist()
    ends = set(eos.tolist())
    result = []
    for row in tokens:  # cut at the first end token
        cut = next((i for i, t in enumerate(row) if t in ends), len(row))
        result.append(row[:cut])
    return result
