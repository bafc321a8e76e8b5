"""``embrm annotate``: golden rewards for every (prompt, response) of a dataset file.

Scorers:

* ``vader`` (the offline default): VADER's compound sentiment of the response, from the
  ``vaderSentiment`` package (a published, rule-based scorer that nobody here wrote),
  in [-1, 1]. As a "be positive and kind" reward it is a stand-in for a real golden
  reward model: it rewards warm words, not helpfulness or truth.
* any Hugging Face sequence-classification reward model (hub id or local directory):
  the reward is the logit (one label) or the last label's log-odds, scored in
  length-sorted token-budget batches like extraction. The chat template is used when
  the tokenizer has one, else the (prompt, response) text pair.

Rewards go into the file as ``rewards`` (multi-response) or ``reward`` (pointwise), with
``reward_model`` naming the scorer. Finished records are appended to
``<out>.annotate.partial.jsonl`` as they are scored, so a killed run resumes; records
that already carry rewards from the same scorer are skipped.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embrm.errors import EmbrmError
from embrm.pipeline.files import PartialFile, read_records

VADER = "vader"


@dataclass
class AnnotateConfig:
    dataset: str
    out: str | None = None  # default: rewrite the dataset file in place
    reward_model: str = VADER
    batch_tokens: int = 4096
    max_length: int = 1024
    device: str = "auto"
    dtype: str = "float32"  # golden rewards are the reference: full precision unless asked
    chunk: int = 64  # records per progress write
    quiet: bool = False
    trust_remote_code: bool = False


class VaderScorer:
    name = "vader-compound"

    def __init__(self) -> None:
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError:
            raise EmbrmError("the vader scorer needs `pip install vaderSentiment`") from None
        self.sia = SentimentIntensityAnalyzer()

    def __call__(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        return np.array([self.sia.polarity_scores(r)["compound"] for r in responses], dtype=np.float64)


class SequenceClassifierScorer:
    """A Hugging Face reward model: AutoModelForSequenceClassification."""

    def __init__(self, source: str, cfg: AnnotateConfig):
        from embrm.extractor.models import load_pretrained, load_tokenizer, resolve_dtype, resolve_model
        from embrm.hardware import resolve_device

        src = resolve_model(source)  # pins the weights (hash or commit) and checks the path
        self.name = f"{src.name}@{src.weights[:12]}"
        self.device = resolve_device(cfg.device)
        self.cfg = cfg
        self.tok = load_tokenizer(src, cfg.trust_remote_code)
        self.model = load_pretrained(src, "AutoModelForSequenceClassification", resolve_dtype(cfg.dtype, self.device),
                                     self.device, cfg.trust_remote_code)
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tok.pad_token_id
        self.chat = bool(getattr(self.tok, "chat_template", None))

    def __call__(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        import torch

        from embrm.extractor.batching import pad_batch, token_budget_batches

        if self.chat:
            texts = [self.tok.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": r}],
                                                  tokenize=False) for p, r in zip(prompts, responses)]
            enc = self.tok(texts, add_special_tokens=False, truncation=True, max_length=self.cfg.max_length)
        else:
            enc = self.tok(prompts, responses, truncation=True, max_length=self.cfg.max_length)
        ids = enc["input_ids"]
        lengths = [len(x) for x in ids]
        out = np.empty(len(ids))
        with torch.inference_mode():
            for batch in token_budget_batches(lengths, self.cfg.batch_tokens):
                x, m = pad_batch([ids[i] for i in batch], int(self.tok.pad_token_id))
                logits = self.model(input_ids=x.to(self.device), attention_mask=m.to(self.device)).logits.float()
                score = logits[:, 0] if logits.shape[1] == 1 else logits[:, -1] - torch.logsumexp(logits[:, :-1], 1)
                out[batch] = score.cpu().numpy()
        return out


def make_scorer(cfg: AnnotateConfig) -> Any:
    return VaderScorer() if cfg.reward_model == VADER else SequenceClassifierScorer(cfg.reward_model, cfg)


def _pairs_of(rec: dict[str, Any], i: int) -> tuple[list[str], list[str], bool]:
    if "responses" in rec:
        rs = rec["responses"]
        return [rec["prompt"]] * len(rs), list(rs), True
    if "response" in rec:
        return [rec["prompt"]], [rec["response"]], False
    raise EmbrmError(f"record {i} has neither 'responses' nor 'response'; annotate needs multi-response "
                     "(prompt, responses) or pointwise (prompt, response) records")


def annotate(cfg: AnnotateConfig, on_chunk: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Score every response and write the rewards; safe to kill and re-run."""
    t0 = time.perf_counter()
    src = Path(cfg.dataset)
    if not src.exists():
        raise EmbrmError(f"dataset file {cfg.dataset} does not exist")
    out = Path(cfg.out) if cfg.out else src
    records = read_records(src)
    if not records or "prompt" not in records[0]:
        raise EmbrmError(f"{src.name} needs records with a 'prompt' column")
    scorer_name = "vader-compound" if cfg.reward_model == VADER else None
    partial = PartialFile(out, "annotate")
    done: dict[int, list[float]] = {}
    for r in partial.read():
        if "i" in r and "rewards" in r:
            done[int(r["i"])] = r["rewards"]
            scorer_name = scorer_name or r.get("m")
    scorer = None
    todo = []
    for i, rec in enumerate(records):
        if i in done:
            continue
        if scorer_name and rec.get("reward_model") == scorer_name and ("rewards" in rec or "reward" in rec):
            continue  # already scored by this scorer
        todo.append(i)
    if todo:
        scorer = make_scorer(cfg)
        scorer_name = scorer.name
        todo = [i for i in todo if not (records[i].get("reward_model") == scorer_name
                                        and ("rewards" in records[i] or "reward" in records[i]))]
    bar = None
    if todo and not cfg.quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="record", desc="annotate")
    try:
        for s in range(0, len(todo), cfg.chunk):
            idx = todo[s:s + cfg.chunk]
            prompts, responses, owner = [], [], []
            for i in idx:
                p, r, _ = _pairs_of(records[i], i)
                prompts += p
                responses += r
                owner += [i] * len(r)
            scores = scorer(prompts, responses)
            by: dict[int, list[float]] = {i: [] for i in idx}
            for i, sc in zip(owner, scores.tolist()):
                by[i].append(sc)
            done.update(by)
            partial.append([{"i": i, "rewards": by[i], "m": scorer_name} for i in idx])
            if bar is not None:
                bar.update(len(idx))
            if on_chunk:
                on_chunk(len(idx))
    finally:
        partial.close()
        if bar is not None:
            bar.close()
    for i, rw in done.items():
        rec = records[i]
        _, _, multi = _pairs_of(rec, i)
        rec["rewards" if multi else "reward"] = rw if multi else rw[0]
        rec["reward_model"] = scorer_name
    partial.finish(records)
    return {"records": len(records), "scored": len(todo), "reused": len(records) - len(todo),
            "reward_model": scorer_name, "seconds": time.perf_counter() - t0, "out": str(out)}
