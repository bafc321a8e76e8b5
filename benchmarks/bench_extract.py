"""Extraction throughput on SmolLM2-135M-Instruct and real HH-RLHF pairs, side by side.

(a) per-example loop, batch size 1, fp32;
(b) the seed paper's way: batches of 50 in file order, padded to 512 tokens, fp32;
(c) embrm ``extract`` (length-sorted token-budget batches) in fp32 and in bf16;
(d) the roofline: measured matmul FLOP/s of this machine / the model's FLOPs per token.

Tokens/s counts real (non-pad) tokens. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from embrm.extractor import EmbeddingSpec, ExtractConfig, RunOptions, extract
from embrm.extractor.datasets import DatasetSpec, iter_rows
from embrm.extractor.formatting import encode_batch
from embrm.extractor.models import load_pretrained, load_tokenizer, resolve_model
from embrm.store import open_store

from _common import gemm_flops, machine_line, table, write_json

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def flops_per_token(model, seq: float) -> float:
    """2 x non-embedding parameters, plus attention scores and values over ``seq`` tokens."""
    cfg = model.config
    n = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)
    return 2 * n + 2 * 2 * cfg.num_hidden_layers * seq * cfg.hidden_size / 2  # causal: half the keys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=48, help="HH-RLHF pairs (items = 2 x pairs)")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--skip-slow", action="store_true", help="skip (a) and (b)")
    ap.add_argument("--json", default="extract.json")
    a = ap.parse_args()
    if not HH.exists():
        raise SystemExit(f"needs {HH}")
    torch.manual_seed(0)
    spec = DatasetSpec(str(HH), limit=a.pairs)
    rows = list(iter_rows(spec))
    src = resolve_model(None)
    tok = load_tokenizer(src)
    enc = encode_batch(tok, [r["prompt"] for r in rows], [r["response"] for r in rows], "raw", a.max_length, "left")
    real_tokens = sum(len(e.ids) for e in enc)
    model = load_pretrained(src, "AutoModel", "float32", "cpu")
    res: dict[str, dict] = {}

    def record(name: str, seconds: float, note: str = "") -> None:
        res[name] = {"seconds": seconds, "tok_s": real_tokens / seconds, "note": note}
        print(f"  {name}: {seconds:.1f} s, {real_tokens / seconds:,.0f} tok/s {note}", flush=True)

    ref = None
    if not a.skip_slow:
        t = time.perf_counter()
        out = []
        with torch.inference_mode():
            for e in enc:
                out.append(model(input_ids=torch.tensor([e.ids])).last_hidden_state[0, -1].numpy())
        record("(a) per-example, bs 1, fp32", time.perf_counter() - t)
        ref = np.stack(out)
        t = time.perf_counter()
        with torch.inference_mode():
            for s in range(0, len(enc), 50):
                chunk = enc[s:s + 50]
                ids = torch.full((len(chunk), 512), tok.pad_token_id)
                mask = torch.zeros((len(chunk), 512), dtype=torch.long)
                for r, e in enumerate(chunk):
                    ids[r, :len(e.ids)] = torch.tensor(e.ids[:512])
                    mask[r, :len(e.ids)] = 1
                model(input_ids=ids, attention_mask=mask)
        record("(b) seed: bs 50 padded to 512, fp32", time.perf_counter() - t)
    del model

    vecs = {}
    with tempfile.TemporaryDirectory() as d:
        for dtype in ("float32", "bfloat16"):
            cfg = ExtractConfig(DatasetSpec(str(HH), limit=a.pairs),
                                EmbeddingSpec(dtype=dtype, max_length=a.max_length),
                                RunOptions(store=f"{d}/s", quiet=True))
            r = extract(cfg)
            res[f"(c) embrm {dtype}"] = {"seconds": r.compute_seconds, "tok_s": r.tokens / r.compute_seconds,
                                         "end_to_end_s": r.seconds, "note": "forward+pool+write, model load excluded"}
            print(f"  (c) embrm {dtype}: {r.compute_seconds:.1f} s, {r.tokens / r.compute_seconds:,.0f} tok/s "
                  f"(end to end incl. load {r.seconds:.1f} s)", flush=True)
            vecs[dtype] = open_store(f"{d}/s").load(r.model_hash, r.dataset_hash).vectors
    mean_len = real_tokens / len(enc)
    fpt = flops_per_token(load_pretrained(src, "AutoModel", "float32", "cpu"), mean_len)
    peak = {dt: gemm_flops(2048, 576, 1536, getattr(torch, dt), reps=20, warmup=3) for dt in ("float32", "bfloat16")}
    for dt, f in peak.items():
        res[f"(d) roofline {dt}"] = {"tok_s": f / fpt, "matmul_gflops": f / 1e9, "note": f"{fpt / 1e6:.0f} MFLOP/token"}

    base_b = res.get("(b) seed: bs 50 padded to 512, fp32", {}).get("tok_s")
    print(machine_line())
    print(f"# SmolLM2-135M-Instruct, {len(enc)} HH-RLHF items, mean {mean_len:.0f} tokens, "
          f"max_length {a.max_length}")
    print(table([{"method": k, "tok/s": v["tok_s"], "vs (b)": v["tok_s"] / base_b if base_b else None}
                 for k, v in res.items()], floatfmt="{:,.2f}"))
    summary = {"items": len(enc), "mean_tokens": mean_len, "results": res,
               "bf16_fraction_of_roofline": res["(c) embrm bfloat16"]["tok_s"] / res["(d) roofline bfloat16"]["tok_s"],
               "fp32_fraction_of_roofline": res["(c) embrm float32"]["tok_s"] / res["(d) roofline float32"]["tok_s"]}
    if ref is not None:
        diff = np.abs(vecs["float32"] - ref)
        summary["fp32_vs_a_max_abs_diff"] = float(diff.max())
        summary["fp32_vs_a_max_rel_diff"] = float((diff / (np.abs(ref) + 1e-3)).max())
        summary["fp32_identical_to_a"] = bool(np.array_equal(vecs["float32"], ref))
        summary["speedup_fp32_vs_b"] = res["(c) embrm float32"]["tok_s"] / base_b
        summary["speedup_bf16_vs_b"] = res["(c) embrm bfloat16"]["tok_s"] / base_b
        print(f"fp32 vectors vs (a): max abs diff {diff.max():.2e}, bit-identical: {summary['fp32_identical_to_a']}")
    print(f"bf16 at {summary['bf16_fraction_of_roofline']:.0%} of the bf16 roofline; "
          f"fp32 at {summary['fp32_fraction_of_roofline']:.0%} of the fp32 roofline")
    print(f"wrote {write_json(a.json, summary)}")


if __name__ == "__main__":
    main()
