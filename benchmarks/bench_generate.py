"""Response generation on the CPU: embrm's decoding loop against transformers' ``generate``,
and both against a floor computed from this machine's measured bandwidth and FLOP/s.

SmolLM2-135M-Instruct (the packaged GGUF), the demo's built-in prompts, K responses each,
the demo's settings (temperature 0.8, top-p 0.95, top-k 50, 48 new tokens). Tokens/s
counts generated tokens up to each sequence's end.

The floor: a decoding step of B sequences reads every weight once (memory-bound at small
B) and does 2 x parameters FLOPs per sequence (compute-bound at large B); the faster of
the two limits, from a measured copy bandwidth and a matmul of the step's shape, bounds
tokens/s from above.

To measure an AVX2-only CPU on a newer one, limit the kernels' instruction sets:
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2`` (the
table's header says when they are set) and pass ``--dtype float32`` (what ``auto`` picks
without native bf16).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from embrm.extractor.models import load_pretrained, load_tokenizer, resolve_dtype, resolve_model
from embrm.options import quiet_third_party
from embrm.pipeline.generate import load_prompts
from embrm.pipeline.sampling import sample_responses, stop_ids

from _common import gemm_flops, machine_line, table, write_json


def bandwidth(gb: float = 1.0, reps: int = 3) -> float:
    a = np.ones(int(gb * 2**30 / 4), np.float32)
    b = np.empty_like(a)
    best = np.inf
    for _ in range(reps):
        t = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t)
    return 2 * a.nbytes / best  # read + write


def count(rows: list[list[int]]) -> int:
    return sum(len(r) for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--json", default="generate.json")
    a = ap.parse_args()
    quiet_third_party()
    src = resolve_model(None)
    dtype = resolve_dtype(a.dtype, "cpu")
    tok = load_tokenizer(src)
    tok.padding_side = "left"
    model = load_pretrained(src, "AutoModelForCausalLM", dtype, "cpu")
    prompts = load_prompts("builtin")[:a.prompts]
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    settings = dict(temperature=0.8, top_p=0.95)
    ends = set(stop_ids(tok, model))

    def hf() -> list[list[int]]:
        out = model.generate(**enc, do_sample=True, top_k=50, max_new_tokens=a.max_new_tokens, min_new_tokens=1,
                             num_return_sequences=a.k, pad_token_id=tok.pad_token_id, **settings)
        rows = out[:, enc["input_ids"].shape[1]:].tolist()
        return [r[:next((i for i, t in enumerate(r) if t in ends), len(r))] for r in rows]

    def embrm() -> list[list[int]]:
        return sample_responses(model, tok, enc["input_ids"], enc["attention_mask"], a.k, a.max_new_tokens, 1,
                                top_k=50, **settings)

    rows, res = [], {}
    for name, fn in (("transformers generate", hf), ("embrm loop", embrm), ("transformers generate", hf),
                     ("embrm loop", embrm)):
        torch.manual_seed(0)
        with torch.inference_mode():
            t = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t
        n = count(out)
        res.setdefault(name, []).append({"seconds": dt, "tokens": n, "tok_s": n / dt})
        print(f"  {name}: {dt:.1f} s, {n} tokens, {n / dt:,.0f} tok/s", flush=True)
    seqs = a.prompts * a.k
    params = sum(p.numel() for p in model.parameters())
    wbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bw = bandwidth()
    tdtype = getattr(torch, dtype)
    hidden, inter, vocab = model.config.hidden_size, model.config.intermediate_size, model.config.vocab_size
    flops = (gemm_flops(seqs, hidden, inter, tdtype) + gemm_flops(seqs, hidden, vocab, tdtype)) / 2
    step_mem, step_compute = wbytes / bw, 2 * params * seqs / flops
    floor = seqs / max(step_mem, step_compute)
    best = {k: max(v, key=lambda r: r["tok_s"]) for k, v in res.items()}
    base = best["transformers generate"]["tok_s"]
    for name, r in best.items():
        rows.append({"method": name, "tok/s": r["tok_s"], "vs generate": r["tok_s"] / base,
                     "of floor": r["tok_s"] / floor})
    rows.append({"method": f"floor ({'compute' if step_compute > step_mem else 'memory'}-bound)", "tok/s": floor,
                 "vs generate": floor / base, "of floor": 1.0})
    print(machine_line())
    print(f"# SmolLM2-135M-Instruct {dtype}, {a.prompts} prompts x {a.k} = {seqs} sequences, "
          f"{a.max_new_tokens} new tokens; best of 2 alternating runs")
    print(f"# floor: {wbytes / 1e6:.0f} MB of weights a step at {bw / 1e9:.1f} GB/s copy bandwidth = "
          f"{step_mem * 1e3:.0f} ms; {2 * params * seqs / 1e9:.1f} GFLOP a step at {flops / 1e9:.0f} GFLOP/s "
          f"(matmuls of the step's shapes) = {step_compute * 1e3:.0f} ms")
    print(table(rows, floatfmt="{:,.2f}"))
    path = write_json(a.json, {"dtype": dtype, "sequences": seqs, "runs": res, "table": rows, "bandwidth": bw,
                               "matmul_flops": flops, "floor_tok_s": floor})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
