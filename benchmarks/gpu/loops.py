"""The loops the GPU check times, besides embrm's own ``Embedder.embed_encoded``.

Extraction:

* :func:`seed_way`: the seed paper's batching, as ``bench_extract.py`` (b): batches of
  50 in input order, each padded to 512 tokens, a plain ``model(input_ids,
  attention_mask)`` call, plain (pageable, blocking) copies;
* :func:`one_at_a_time`: batch size 1, one forward and one device-to-host copy per item,
  as ``bench_extract.py`` (a);
* :func:`embed_loop`: ``Embedder.embed_encoded`` written out again (same batches, same
  padding, same pooling) with its host-to-device copies as switches, for the transfer
  section: ``pin`` (pinned host buffers), ``non_blocking`` (asynchronous copies) and
  ``index_on_host`` (the batch's row index built on the host and copied pinned and
  asynchronously, as embrm does, instead of ``torch.tensor(batch, device=device)``, a
  blocking copy that waits for the GPU once per batch).

Every loop takes a :class:`Guard` and stops between steps once its deadline has passed,
returning what it measured so far (``complete`` says whether it covered every item).

Ensemble training runs ``embrm.rm.trainer.train`` itself on the device
(``TrainConfig(device="cuda")``); only :func:`pairwise_accuracy` is repeated here,
because ``embrm.rm.metrics`` imports scipy, which the GPU image may lack.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from embrm.extractor.batching import pad_batch, token_budget_batches
from embrm.extractor.pooling import pool


class Cut(Exception):
    """A section ran out of its time budget."""


class Guard:
    """A deadline, checked between steps."""

    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + max(0.0, seconds)

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def expired(self) -> bool:
        return self.left() <= 0

    def check(self, where: str) -> None:
        if self.expired():
            raise Cut(where)

    def sub(self, fraction: float) -> Guard:
        """A guard for a part of what is left (never beyond this one's deadline)."""
        return Guard(self.left() * fraction)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@dataclass
class Timed:
    """Real tokens and items covered, and the seconds it took."""

    tokens: int = 0
    items: int = 0
    seconds: float = 0.0
    complete: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict:
        return {"tokens": self.tokens, "items": self.items, "seconds": self.seconds, "tok_s": self.tok_s,
                "complete": self.complete, **self.extra}


# ----------------------------------------------------------------- extraction
def seed_way(model, enc: list, pad_id: int, device: str, guard: Guard, batch: int = 50, width: int = 512) -> Timed:
    """The seed's batching: ``batch`` items in input order, padded to ``width`` tokens."""
    out, res = [], Timed()
    sync(device)
    t = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(enc), batch):
            if guard.expired():
                res.complete = False
                break
            chunk = enc[s:s + batch]
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, e in enumerate(chunk):
                ids[r, :len(e.ids)] = torch.tensor(e.ids[:width])
                mask[r, :len(e.ids)] = 1
            ids, mask = ids.to(device), mask.to(device)
            h = model(input_ids=ids, attention_mask=mask).last_hidden_state
            out.append(h[torch.arange(len(chunk), device=device), mask.sum(1) - 1].float())
            res.items += len(chunk)
            res.tokens += sum(min(len(e.ids), width) for e in chunk)
        if out:
            torch.cat(out).cpu()
    sync(device)
    res.seconds = time.perf_counter() - t
    return res


def one_at_a_time(model, enc: list, device: str, guard: Guard) -> tuple[Timed, np.ndarray]:
    """Batch size 1: one forward and one copy back per item. Returns the last-token vectors too."""
    out, res = [], Timed()
    sync(device)
    t = time.perf_counter()
    with torch.inference_mode():
        for e in enc:
            if guard.expired():
                res.complete = False
                break
            h = model(input_ids=torch.tensor([e.ids], device=device)).last_hidden_state
            out.append(h[0, -1].float().cpu().numpy())
            res.items += 1
            res.tokens += len(e.ids)
    res.seconds = time.perf_counter() - t
    return res, (np.stack(out) if out else np.zeros((0, 0), np.float32))


def embed_loop(model, enc: list, pad_id: int, left_pad: bool, device: str, batch_tokens: int, pooling: str = "last",
               pin: bool = True, non_blocking: bool = True, index_on_host: bool = False) -> tuple[Timed, np.ndarray]:
    """``Embedder.embed_encoded`` for the last layer, with the copy strategy as switches.

    ``pin=True, non_blocking=True, index_on_host=True`` is what embrm does on CUDA.
    Pinning only applies on CUDA.
    """
    pin = pin and device == "cuda"
    lengths = [len(e.ids) for e in enc]
    outs = torch.empty((len(enc), model.config.hidden_size), dtype=torch.float32, device=device)
    sync(device)
    t = time.perf_counter()
    with torch.inference_mode():
        for batch in token_budget_batches(lengths, batch_tokens):
            ids, mask = pad_batch([enc[i].ids for i in batch], pad_id, left=left_pad)
            start = torch.tensor([enc[i].response_start for i in batch])
            host_idx = torch.tensor(batch) if index_on_host else None
            if pin:
                ids, mask, start = ids.pin_memory(), mask.pin_memory(), start.pin_memory()
                host_idx = host_idx.pin_memory() if host_idx is not None else None
            ids = ids.to(device, non_blocking=non_blocking)
            mask = mask.to(device, non_blocking=non_blocking)
            start = start.to(device, non_blocking=non_blocking)
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=False, use_cache=False)
            if host_idx is not None:
                idx = host_idx.to(device, non_blocking=non_blocking)
            else:
                idx = torch.tensor(batch, device=device)  # as embrm: a blocking copy
            outs[idx] = pool(out.last_hidden_state, mask, start, pooling)
        vectors = outs.cpu().numpy()
    res = Timed(tokens=int(sum(lengths)), items=len(enc), seconds=time.perf_counter() - t)
    return res, vectors


def pairwise_accuracy(score_a: np.ndarray, score_b: np.ndarray, y: np.ndarray) -> float:
    """``embrm.rm.metrics.pairwise_accuracy`` (ties count 1/2); that module imports scipy."""
    pred = np.sign(score_a - score_b)
    truth = np.where(y > 0.5, 1.0, -1.0)
    return float(np.mean(np.where(pred == 0, 0.5, pred == truth)))
