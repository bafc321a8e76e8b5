"""Input formats: how a (prompt, response) becomes token ids.

* ``raw``  – prompt + response as one string (with the tokenizer's special tokens);
* ``pair`` – the tokenizer's text-pair encoding, as the seed paper's code does;
* ``chat`` – the tokenizer's chat template, prompt as user and response as assistant.

Each encoding also returns where the response starts (a token index), which ``mean``
pooling needs. It is found from character offsets, not by tokenizing the prompt alone,
because tokens can merge across the prompt/response boundary.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from embrm.errors import EmbrmError

FORMATS = ("raw", "pair", "chat")


@dataclass
class Encoded:
    ids: list[int]
    response_start: int  # token index of the response's first token
    n_tokens: int  # before truncation
    truncated: bool


def template_text(tok: Any, input_format: str) -> str:
    """What of the tokenizer enters the fingerprint for this format."""
    if input_format == "chat":
        t = getattr(tok, "chat_template", None)
        if not t:
            raise EmbrmError("--format chat needs a tokenizer with a chat template; this one has none: use raw or pair")
        return t if isinstance(t, str) else json.dumps(t, sort_keys=True)
    return ""


def _chat_messages(prompt: str) -> list[dict[str, str]]:
    if prompt.startswith('[{"role"'):
        try:
            msgs = json.loads(prompt)
            if isinstance(msgs, list):
                return msgs
        except json.JSONDecodeError:
            pass
    return [{"role": "user", "content": prompt}]


def clip_texts(prompt: str, response: str, chars: int, truncation_side: str) -> tuple[str, str]:
    """The part of (prompt, response) that truncation can reach, by characters.

    A text far longer than ``max_length`` tokens costs time and memory to tokenise (a
    30 MB input once took 37 s and 6 GB) only for most of its tokens to be cut. With
    ``chars`` at least twice the characters ``max_length`` tokens can span, the kept
    tokens are the same, so the text is cut first: its end when truncation keeps the end
    (``left``), its start otherwise. Item keys still hash the whole texts.
    """
    if len(prompt) + len(response) <= chars:
        return prompt, response
    if truncation_side == "left":
        keep = max(0, chars - len(response))
        return (prompt[len(prompt) - keep:] if keep else ""), response[max(0, len(response) - chars):]
    keep = max(0, chars - len(prompt))
    return prompt[:chars], response[:keep]


def _first_token_at(offsets: list[tuple[int, int]], char: int) -> int:
    """Index of the first token that ends after ``char`` (the response's first token)."""
    for i, (s, e) in enumerate(offsets):
        if e > char and e > s:
            return i
    return len(offsets)


def encode_batch(tok: Any, prompts: list[str], responses: list[str], input_format: str,
                 max_length: int, truncation_side: str, clip_chars: int | None = None) -> list[Encoded]:
    """Tokenize rows; truncation keeps ``max_length`` tokens from the right or left end.
    ``clip_chars`` cuts longer texts first (:func:`clip_texts`; a chat prompt that is a
    message list and longer than that is then rendered as one plain user message)."""
    if input_format not in FORMATS:
        raise EmbrmError(f"unknown format {input_format!r}; use one of {', '.join(FORMATS)}")
    if not getattr(tok, "is_fast", False):
        raise EmbrmError("embrm needs a fast (Rust) tokenizer for character offsets; this model has none")
    if clip_chars is not None:
        pairs = [clip_texts(p, r, clip_chars, truncation_side) for p, r in zip(prompts, responses)]
        prompts, responses = [p for p, _ in pairs], [r for _, r in pairs]
    if input_format == "pair":
        enc = tok(prompts, responses, add_special_tokens=True, return_attention_mask=False)
        out_ids = enc["input_ids"]
        starts = []
        for b in range(len(prompts)):
            seq = enc.sequence_ids(b)
            starts.append(next((i for i, s in enumerate(seq) if s == 1), len(seq)))
    else:
        if input_format == "raw":
            texts = [p + r for p, r in zip(prompts, responses)]
            cuts = [len(p) for p in prompts]
            special = True
        else:
            texts, cuts = [], []
            for p, r in zip(prompts, responses):
                msgs = _chat_messages(p)
                head = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
                full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": r}], tokenize=False)
                texts.append(full)
                cuts.append(len(head) if full.startswith(head) else len(full) - len(r))
            special = False  # the template writes its own
        enc = tok(texts, add_special_tokens=special, return_offsets_mapping=True, return_attention_mask=False)
        out_ids = enc["input_ids"]
        starts = [_first_token_at(off, c) for off, c in zip(enc["offset_mapping"], cuts)]
    res = []
    for ids, start in zip(out_ids, starts):
        n = len(ids)
        if n > max_length:
            if truncation_side == "left":
                cut = n - max_length
                ids = ids[cut:]
                start = max(0, start - cut)
            else:
                ids = ids[:max_length]
                start = min(start, max_length)
        res.append(Encoded(list(ids), start, n, n > max_length))
    return res
