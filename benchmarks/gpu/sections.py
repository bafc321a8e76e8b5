"""The sections of the GPU check. Each is ``fn(ctx, guard, res)``: it fills the dict ``res``
as it goes (so a section cut short or failing still reports what it measured) and
checks ``guard`` between steps. See ``gpu_check.py`` for what each one measures.
"""
from __future__ import annotations

import gc
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import loops
import numpy as np
import synth
import torch
from loops import Guard, Timed, sync

from embrm.extractor.embedder import Embedder, EmbeddingSpec
from embrm.extractor.models import resolve_model
from embrm.rm.trainer import TrainConfig, train

MAX_LENGTH = 512  # the seed pads to 512; every method sees the same (left-)truncated ids


@dataclass
class Params:
    """Sizes of one run: full size on a GPU, tiny for ``--smoke``."""

    items: int = 4096  # extraction items per shape
    warm_items: int = 256
    single_items: int = 256  # cap for one-at-a-time
    equiv_items: int = 64
    transfer_items: int = 2048
    gemm: int = 8192
    repeats: int = 2
    batch_tokens: int | None = None  # None: the Embedder's default for the device
    ens_dim: int = 2048
    ens_hidden: tuple[int, ...] = (1024, 512)
    ens_pairs: int = 40_000
    ens_val: int = 5000
    ens_epochs: int = 5
    ens_batch: int = 1024
    ens_members: int = 10
    shrink: bool = True  # fewer extraction items where embrm's warm-up rate says the whole set would not fit


SMOKE = Params(items=24, warm_items=4, single_items=6, equiv_items=6, transfer_items=12, gemm=256, repeats=1,
               ens_dim=64, ens_hidden=(32, 16), ens_pairs=1024, ens_val=256, ens_epochs=2, ens_batch=256,
               shrink=False)


@dataclass
class Context:
    device: str
    params: Params
    shapes: dict[str, synth.Shape]
    workdir: Path
    seed: int = 0
    sources: dict[str, Any] = field(default_factory=dict)
    gemm_flops: float | None = None
    texts: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    enc: dict[str, list] = field(default_factory=dict)
    embedders: dict[tuple[str, str], Embedder] = field(default_factory=dict)

    def embedder(self, name: str, dtype: str, res: dict | None = None) -> Embedder:
        """The (cached) loaded Embedder of a shape in a dtype; load seconds go into ``res``."""
        key = (name, dtype)
        if key not in self.embedders:
            if name not in self.sources:
                raise RuntimeError(f"model {name} was not built (see the models section)")
            spec = EmbeddingSpec(model=str(self.workdir / name), dtype=dtype, pooling="last", max_length=MAX_LENGTH)
            t = time.perf_counter()
            emb = Embedder(spec, device=self.device, batch_tokens=self.params.batch_tokens,
                           source=self.sources[name]).load()
            if res is not None:
                res[f"load_{dtype}_s"] = time.perf_counter() - t
            self.embedders[key] = emb
        return self.embedders[key]

    def drop(self, name: str, dtype: str) -> None:
        self.embedders.pop((name, dtype), None)
        free(self.device)

    def items(self, name: str, emb: Embedder) -> tuple[list[str], list[str], list]:
        """The shape's texts and their encoding (made once, shared by the sections)."""
        if name not in self.texts:
            self.texts[name] = synth.texts(self.params.items, self.shapes[name].vocab_size, self.seed)
        if name not in self.enc:
            self.enc[name] = emb.encode(*self.texts[name])
        return (*self.texts[name], self.enc[name])


def free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def log(msg: str) -> None:
    print(f"  {msg}", flush=True)


def model_of(emb: Embedder):
    """The loaded transformers model inside an Embedder (the other loops run the same weights)."""
    return emb.load()._model


def flops_per_token(model, seq: float) -> float:
    """``bench_extract.flops_per_token``: 2 x non-embedding parameters, plus attention
    scores and values over ``seq`` tokens (causal: half the keys)."""
    cfg = model.config
    n = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)
    return 2 * n + 2 * 2 * cfg.num_hidden_layers * seq * cfg.hidden_size / 2


def per_shape(ctx: Context, g: Guard, res: dict, fn) -> None:
    """Run ``fn(name, guard, r)`` for each shape with an even share of the time left. A shape
    that fails or runs out is recorded in its ``r`` and the next shape still runs; the
    section then reports the failure (error) or the cut."""
    names, errors, cuts = list(ctx.shapes), [], []
    for k, name in enumerate(names):
        r = res[name] = {}
        try:
            fn(name, g.sub(1 / (len(names) - k)), r)
        except loops.Cut as e:
            r["cut_at"] = str(e)
            cuts.append(f"{name}: {e}")
            log(f"{name}: cut short at {e}")
        except Exception as e:  # the next shape still runs
            r["error"], r["traceback"] = f"{type(e).__name__}: {e}", traceback.format_exc(limit=8)
            errors.append(f"{name}: {r['error']}")
            log(f"{name}: ERROR {r['error']}\n{r['traceback']}")
        free(ctx.device)
    if errors:
        raise RuntimeError("; ".join(errors))
    if cuts:
        raise loops.Cut("; ".join(cuts))


# --------------------------------------------------------------------- models
def models(ctx: Context, g: Guard, res: dict) -> None:
    """Build each shape's random-weight model and tokenizer and pin it as embrm does."""
    build_on = ctx.device if ctx.device == "cuda" else "cpu"
    for name, shape in ctx.shapes.items():
        g.check(f"before building {name}")
        t = time.perf_counter()
        path = synth.build_model(shape, ctx.workdir / name, device=build_on, seed=ctx.seed)
        built = time.perf_counter() - t
        t = time.perf_counter()
        ctx.sources[name] = resolve_model(str(path))
        size = sum(f.stat().st_size for f in path.iterdir())
        res[name] = {**shape.config(), "build_s": built, "resolve_s": time.perf_counter() - t, "bytes": size}
        free(ctx.device)
        log(f"{name}: built and saved in {built:.1f} s ({size / 1e6:,.0f} MB)")


# ------------------------------------------------------------------- roofline
def roofline(ctx: Context, g: Guard, res: dict) -> None:
    """bf16 matmul FLOP/s of this device: one large square GEMM, best of a few timed batches."""
    n, dev = ctx.params.gemm, ctx.device
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(dev)
    best, reps = float("inf"), 10
    for _ in range(3):
        g.check("roofline")
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(dev)
        best = min(best, (time.perf_counter() - t) / reps)
    ctx.gemm_flops = 2 * n ** 3 / best
    res.update({"n": n, "dtype": "bfloat16", "seconds_per_gemm": best, "tflops": ctx.gemm_flops / 1e12})
    log(f"bf16 GEMM {n}^3: {ctx.gemm_flops / 1e12:,.1f} TFLOP/s")
    del a, b
    free(dev)


# ----------------------------------------------------------------- extraction
def extraction(ctx: Context, g: Guard, res: dict) -> None:
    """Per shape, bf16: embrm's batching, the seed's way and one at a time, on the same items."""
    per_shape(ctx, g, res, lambda name, sg, r: _extraction(ctx, name, sg, r))


def _extraction(ctx: Context, name: str, sg: Guard, r: dict) -> None:
    p, dev = ctx.params, ctx.device
    emb = ctx.embedder(name, "bfloat16", r)
    t = time.perf_counter()
    _, _, enc = ctx.items(name, emb)
    r["encode_s"] = time.perf_counter() - t
    model, pad = model_of(emb), int(emb.tokenizer.pad_token_id)
    tokens = [len(e.ids) for e in enc]
    r.update({"items": len(enc), "mean_tokens": float(np.mean(tokens)), "max_tokens": int(max(tokens)),
              "truncated": int(sum(e.truncated for e in enc)), "batch_tokens": emb.batch_tokens,
              "params": sum(q.numel() for q in model.parameters())})
    fpt = flops_per_token(model, float(np.mean(tokens)))
    r["mflop_per_token"] = fpt / 1e6

    # embrm: warm up on a slice, shrink the item set if the whole would not fit
    sync(dev)
    t = time.perf_counter()
    emb.embed_encoded(enc[:p.warm_items])
    sync(dev)
    warm_rate = sum(tokens[:p.warm_items]) / (time.perf_counter() - t)
    fit = max(p.warm_items, int(len(enc) * min(1.0, 0.2 * sg.left() * warm_rate / sum(tokens))))
    if p.shrink and fit < len(enc):
        enc = enc[:fit]
        r["items_cut_to"] = fit
    best = None
    for _ in range(p.repeats):
        sync(dev)
        t = time.perf_counter()
        out = emb.embed_encoded(enc)
        sync(dev)
        run = Timed(out.tokens, len(enc), time.perf_counter() - t)
        best = run if best is None or run.seconds < best.seconds else best
        if sg.expired():
            break
    r["embrm"] = best.as_dict()
    log(f"{name}: embrm {best.tok_s:,.0f} tok/s ({best.items} items, {best.seconds:.2f} s)")

    # the seed's way, warmed on one batch
    sg.check(f"{name}: before the seed's way")
    loops.seed_way(model, enc[:50], pad, dev, sg)
    seed = loops.seed_way(model, enc, pad, dev, sg.sub(0.7))
    r["seed"] = seed.as_dict()
    log(f"{name}: seed's way {seed.tok_s:,.0f} tok/s ({seed.items} items{'' if seed.complete else ', cut'})")

    # one at a time, capped
    sg.check(f"{name}: before one at a time")
    loops.one_at_a_time(model, enc[:3], dev, sg)
    single, _ = loops.one_at_a_time(model, enc[:p.single_items], dev, sg.sub(0.9))
    r["single"] = single.as_dict()
    log(f"{name}: one at a time {single.tok_s:,.0f} tok/s ({single.items} items)")

    r["speedup_vs_seed"] = best.tok_s / seed.tok_s
    r["speedup_vs_single"] = best.tok_s / single.tok_s
    if ctx.gemm_flops:
        r["roofline_tok_s"] = ctx.gemm_flops / fpt
        r["roofline_fraction"] = best.tok_s / r["roofline_tok_s"]
        r["seed_roofline_fraction"] = seed.tok_s / r["roofline_tok_s"]


# ---------------------------------------------------------------- equivalence
def _set_tf32(on: bool) -> dict:
    """Switch TF32 for fp32 matmuls and convolutions; returns what was set before.

    The legacy switches (``allow_tf32``) are what torch 2.x documents; should a torch
    refuse them, the newer ``fp32_precision`` settings are used instead.
    """
    before = {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32,
              "precision": torch.get_float32_matmul_precision()}
    try:
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on
        torch.set_float32_matmul_precision("high" if on else "highest")
    except RuntimeError:
        torch.backends.cuda.matmul.fp32_precision = "tf32" if on else "ieee"
        torch.backends.cudnn.conv.fp32_precision = "tf32" if on else "ieee"
    return before


def _restore_tf32(before: dict) -> None:
    try:
        torch.backends.cuda.matmul.allow_tf32 = before["matmul"]
        torch.backends.cudnn.allow_tf32 = before["cudnn"]
        torch.set_float32_matmul_precision(before["precision"])
    except RuntimeError:
        pass


def equivalence(ctx: Context, g: Guard, res: dict) -> None:
    """fp32, TF32 off: ``Embedder.embed`` (batched) against one forward per item (last token)."""
    before = _set_tf32(False)
    res["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
    try:
        per_shape(ctx, g, res, lambda name, sg, r: _equivalence(ctx, name, sg, r))
    finally:
        _restore_tf32(before)
        res["max_abs_diff"] = max((r["max_abs_diff"] for r in res.values() if isinstance(r, dict)
                                   and "max_abs_diff" in r), default=None)


def _equivalence(ctx: Context, name: str, sg: Guard, r: dict) -> None:
    try:
        emb = ctx.embedder(name, "float32", r)
        prompts, responses, _ = ctx.items(name, emb)
        n = ctx.params.equiv_items
        batched = emb.embed(prompts[:n], responses[:n]).vectors[-1]
        single, ref = loops.one_at_a_time(model_of(emb), emb.encode(prompts[:n], responses[:n]), ctx.device, sg)
        diff = np.abs(batched[:len(ref)] - ref)
        r.update({"items": len(ref), "max_abs_diff": float(diff.max()),
                  "max_rel_diff": float((diff / (np.abs(ref) + 1e-3)).max()),
                  "max_abs_value": float(np.abs(ref).max()), "complete": single.complete})
        log(f"{name}: fp32 batched vs one at a time: max abs diff {diff.max():.2e} over {len(ref)} items")
    finally:
        ctx.drop(name, "float32")


# ------------------------------------------------------------------- ensemble
def ensemble(ctx: Context, g: Guard, res: dict) -> None:
    """M members batched against the same M one after another, bf16, fixed epochs, by
    embrm's own trainer on the device (``TrainConfig(device=...)``)."""
    p, dev = ctx.params, ctx.device
    g.check("before the data")
    t = time.perf_counter()
    x, tr, va = synth.reward_data(p.ens_dim, p.ens_pairs, p.ens_val, seed=ctx.seed)
    xd = torch.from_numpy(x).to(dev)
    m = p.ens_members
    base = dict(hidden=p.ens_hidden, batch_size=p.ens_batch, max_epochs=p.ens_epochs, patience=p.ens_epochs + 1,
                bf16=True, device=dev)
    res.update({"dim": p.ens_dim, "hidden": list(p.ens_hidden), "members": m, "train_pairs": len(tr),
                "val_pairs": len(va), "epochs": p.ens_epochs, "batch": p.ens_batch, "data_s": time.perf_counter() - t})
    # warm-up: both sides, one short epoch
    few = tr.subset(np.arange(len(tr)) < 4 * p.ens_batch)
    train(xd, few, va, TrainConfig(ensemble=m, member_group=m, **{**base, "max_epochs": 1}))
    train(xd, few, va, TrainConfig(ensemble=1, **{**base, "max_epochs": 1}))
    sync(dev)

    batched_s, seq_s, run_b, seq_runs = [], [], None, []
    for rep in range(p.repeats):
        g.check(f"batched, repeat {rep + 1}")
        sync(dev)
        t = time.perf_counter()
        run_b = train(xd, tr, va, TrainConfig(ensemble=m, member_group=m, seed=0, **base))
        sync(dev)
        batched_s.append(time.perf_counter() - t)
        res["batched_s"] = min(batched_s)
        log(f"batched ({m} members in one group): {batched_s[-1]:.2f} s")
        seq_runs, elapsed = [], 0.0
        for s in range(m):
            if g.expired():
                break
            sync(dev)
            t = time.perf_counter()
            seq_runs.append(train(xd, tr, va, TrainConfig(ensemble=1, seed=s, **base)))
            sync(dev)
            elapsed += time.perf_counter() - t
        if not seq_runs:
            raise loops.Cut("sequential: no member trained")
        seq_s.append(elapsed * m / len(seq_runs))
        res.update({"sequential_s": min(seq_s), "sequential_members_timed": len(seq_runs),
                    "sequential_extrapolated": len(seq_runs) < m})
        log(f"sequential ({len(seq_runs)} of {m} members timed): {seq_s[-1]:.2f} s")
        if g.expired():
            break
    res.update({"all_batched_s": batched_s, "all_sequential_s": seq_s, "speedup": min(seq_s) / min(batched_s),
                "epochs_run": run_b.log.epochs, "steps": run_b.log.steps})
    sb = run_b.score(x).mean(0)
    ss = np.mean([r.score(x)[0] for r in seq_runs], 0)
    res["acc_batched"] = loops.pairwise_accuracy(sb[va.a], sb[va.b], va.y)
    res["acc_sequential"] = loops.pairwise_accuracy(ss[va.a], ss[va.b], va.y)
    res["acc_diff"] = res["acc_batched"] - res["acc_sequential"]
    log(f"speed-up {res['speedup']:.2f}x; accuracy batched {res['acc_batched']:.4f}, "
        f"sequential {res['acc_sequential']:.4f}")
    # the trainer's default member groups (sized to a CPU cache), for comparison
    if g.left() > 2 * min(batched_s):
        sync(dev)
        t = time.perf_counter()
        train(xd, tr, va, TrainConfig(ensemble=m, seed=0, **base))
        sync(dev)
        res["batched_default_groups_s"] = time.perf_counter() - t
    del xd, x, run_b, seq_runs
    free(dev)


# ------------------------------------------------------------------- transfer
VARIANTS = {
    "embrm: pinned, non-blocking": dict(pin=True, non_blocking=True, index_on_host=True),
    "plain: pageable, blocking": dict(pin=False, non_blocking=False, index_on_host=False),
    "pinned, row index made on the device": dict(pin=True, non_blocking=True, index_on_host=False),
}


def transfer(ctx: Context, g: Guard, res: dict) -> None:
    """Extraction tok/s with embrm's copies (pinned, non-blocking) against plain copies (see loops doc)."""
    res["pinning_applies"] = ctx.device == "cuda"
    per_shape(ctx, g, res, lambda name, sg, r: _transfer(ctx, name, sg, r))


def _transfer(ctx: Context, name: str, sg: Guard, r: dict) -> None:
    p, dev = ctx.params, ctx.device
    emb = ctx.embedder(name, "bfloat16", r)
    enc = ctx.items(name, emb)[2][:p.transfer_items]
    model, pad, left = model_of(emb), int(emb.tokenizer.pad_token_id), emb.tokenizer.padding_side == "left"
    bt = emb.batch_tokens
    ref = emb.embed_encoded(enc).vectors[-1]
    for v in VARIANTS.values():  # warm-up
        loops.embed_loop(model, enc[:p.warm_items], pad, left, dev, bt, **v)
    best: dict[str, Timed] = {}
    for _ in range(p.repeats):
        for label, v in VARIANTS.items():
            sg.check(f"{name}: {label}")
            run, vec = loops.embed_loop(model, enc, pad, left, dev, bt, **v)
            run.extra["max_abs_diff_vs_embedder"] = float(np.abs(vec - ref).max())
            if label not in best or run.seconds < best[label].seconds:
                best[label] = run
            r[label] = best[label].as_dict()
    embrm_v, plain, idx = (best[label].tok_s for label in VARIANTS)
    r["pinned_vs_plain"] = embrm_v / plain
    r["device_index_vs_embrm"] = idx / embrm_v
    log(f"{name}: pinned+non-blocking {embrm_v:,.0f} tok/s, plain {plain:,.0f} tok/s, "
        f"row index made on the device (a blocking copy) {idx:,.0f} tok/s")


SECTIONS = {"models": models, "roofline": roofline, "extraction": extraction, "equivalence": equivalence,
            "ensemble": ensemble, "transfer": transfer}


def make_context(device: str, smoke: bool, workdir: str | None, seed: int = 0) -> Context:
    d = Path(tempfile.mkdtemp(prefix="embrm-gpu-", dir=workdir))
    return Context(device, SMOKE if smoke else Params(), synth.SMOKE_SHAPES if smoke else synth.SHAPES, d, seed)


def close(ctx: Context) -> None:
    ctx.embedders.clear()
    free(ctx.device)
    shutil.rmtree(ctx.workdir, ignore_errors=True)
