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
  asynchronously, instead of ``torch.tensor(batch, device=device)``, a blocking copy
  that waits for the GPU once per batch).

Every loop takes a :class:`Guard` and stops between steps once its deadline has passed,
returning what it measured so far (``complete`` says whether it covered every item).

Ensemble training: :func:`train_on_device` is ``embrm.rm.trainer.train`` for the BT and
CLF MLPs, written out again to run on any device. ``train`` itself builds CPU tensors
(``torch.from_numpy``) and has no device argument, so it cannot run on a GPU; this copy
moves the net, the embeddings, the pairs and each epoch's order to the device and is
otherwise the same loop: the same :class:`EnsembleMLP` and initialisation, per-member
pair orders from ``np.random.default_rng([seed, member])``, ``trainer._step_loss``,
fused AdamW, the same batch (``trainer.batch_for``), validation each epoch and
per-member early stopping that keeps each member's best epoch. On the CPU it gives
``train``'s results bit for bit (the check runs that comparison, and so does
``tests/test_gpu_bench.py``), so it cannot drift from the trainer unnoticed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from embrm.extractor.batching import pad_batch, token_budget_batches
from embrm.extractor.pooling import pool
from embrm.rm.models import EnsembleMLP
from embrm.rm.pairs import Pairs
from embrm.rm.trainer import MIN_STEPS, TrainConfig, _pair_loss, _step_loss, _use_bf16, batch_for


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

    ``pin=True, non_blocking=True, index_on_host=False`` is what embrm does on CUDA.
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


# ------------------------------------------------------------------ ensemble
class _DeviceValidation:
    """``trainer._Validation`` with its index tensors on the embeddings' device."""

    def __init__(self, x: torch.Tensor, pairs: Pairs, members: int, chunk: int = 8192):
        items, inverse = np.unique(np.concatenate([pairs.a, pairs.b]), return_inverse=True)
        dev = x.device
        self.x, self.items, self.chunk = x, torch.from_numpy(items).to(dev), chunk
        self.a = torch.from_numpy(inverse[: len(pairs)]).long().to(dev)
        self.b = torch.from_numpy(inverse[len(pairs):]).long().to(dev)
        self.y = torch.from_numpy(pairs.y.astype(np.float32)).to(dev).expand(members, len(pairs))

    def __call__(self, net: EnsembleMLP, method: str) -> np.ndarray:
        with torch.inference_mode():
            r = torch.cat([net(self.x.index_select(0, self.items[s:s + self.chunk])).float()
                           for s in range(0, len(self.items), self.chunk)], 1)
            return _pair_loss(r[:, self.a], r[:, self.b], self.y, method).cpu().numpy()


@dataclass
class DeviceRun:
    net: EnsembleMLP
    x32: torch.Tensor  # the embeddings on the device, float32 (for scoring, as RewardModel.score)
    epochs: int
    steps: int
    batch: int
    best_epoch: list[int]
    val_loss: list[float]


def train_on_device(x: np.ndarray | torch.Tensor, train_pairs: Pairs, val_pairs: Pairs, cfg: TrainConfig,
                    device: str) -> DeviceRun:
    """``embrm.rm.trainer.train`` (methods bt and clf, no bootstrap, one lr) on ``device``; see the module doc."""
    cfg.validate()
    if cfg.method not in ("bt", "clf") or cfg.bootstrap:
        raise ValueError("the device copy of the trainer covers bt and clf without bootstrap")
    torch.manual_seed(cfg.seed)
    dim = x.shape[1]
    net = EnsembleMLP(cfg.ensemble, dim, cfg.hidden, seed=cfg.seed, bias=True).to(device)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    x32 = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    x32 = x32.to(device=device, dtype=torch.float32)
    xt = x32.to(torch.bfloat16) if _use_bf16(cfg.bf16) else x32
    ta = torch.from_numpy(train_pairs.a).to(device)
    tb = torch.from_numpy(train_pairs.b).to(device)
    ty = torch.from_numpy(train_pairs.y.astype(np.float32)).to(device)
    group = cfg.member_group or None
    validation = _DeviceValidation(xt, val_pairs, cfg.ensemble)
    m, n = cfg.ensemble, len(train_pairs)
    batch = batch_for(n, cfg)
    steps_per_epoch = -(-n // batch)
    min_epochs = -(-MIN_STEPS // steps_per_epoch)
    gens = [np.random.default_rng([cfg.seed, i]) for i in range(m)]
    best = net.state()
    best_loss = np.full(m, np.inf)
    best_epoch = [0] * m
    stale = np.zeros(m, int)
    steps = epochs = 0
    for epoch in range(1, cfg.max_epochs + 1):
        net.train()
        order = torch.from_numpy(np.stack([g.permutation(n) for g in gens])).to(device)
        for s in range(0, n, batch):
            idx = order[:, s:s + batch]
            loss = _step_loss(net, xt, ta[idx], tb[idx], ty[idx], cfg.method, group)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            steps += 1
        net.eval()
        vl = validation(net, cfg.method)
        state = net.state()
        for i in range(m):
            if vl[i] < best_loss[i] - 1e-5:
                best_loss[i], best_epoch[i], stale[i] = vl[i], epoch, 0
                net.member_state(state, i, best)
            else:
                stale[i] += 1
        epochs = epoch
        if epoch >= min_epochs and (stale >= cfg.patience).all():
            break
    net.load_state(best)
    net.eval()
    return DeviceRun(net, x32, epochs, steps, batch, best_epoch, [float(v) for v in best_loss])


def scores(run: DeviceRun, chunk: int = 16384) -> np.ndarray:
    """Rewards (M, N) of every embedding under every member, from float32 rows as ``RewardModel.score``."""
    x = run.x32
    with torch.inference_mode():
        return torch.cat([run.net(x[s:s + chunk]).float() for s in range(0, len(x), chunk)], 1).cpu().numpy()


def pairwise_accuracy(score_a: np.ndarray, score_b: np.ndarray, y: np.ndarray) -> float:
    """``embrm.rm.metrics.pairwise_accuracy`` (ties count 1/2); that module imports scipy."""
    pred = np.sign(score_a - score_b)
    truth = np.where(y > 0.5, 1.0, -1.0)
    return float(np.mean(np.where(pred == 0, 0.5, pred == truth)))
