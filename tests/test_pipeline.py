"""generate, annotate (VADER and a real sequence-classification model), reproduce, demo."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from embrm.cli import main as cli
from embrm.errors import EmbrmError
from embrm.pipeline.annotate import AnnotateConfig, annotate
from embrm.pipeline.files import read_records
from embrm.pipeline.generate import BUILTIN_PROMPTS, GenerateConfig, generate, load_prompts
from embrm.pipeline.reproduce import ReproduceConfig, reproduce_ensemble

from procs import kill_after

PROMPTS = [f"Tell me about thing number {i}." for i in range(6)]


def _prompts(tmp_path: Path) -> Path:
    p = tmp_path / "prompts.txt"
    p.write_text("\n".join(PROMPTS) + "\n")
    return p


def test_builtin_prompts_are_enough():
    ps = load_prompts("builtin")
    assert len(ps) >= 64 and len(set(ps)) == len(ps)
    assert BUILTIN_PROMPTS.exists()


def test_generate_writes_k_responses_reproducibly(tmp_path, tiny_model):
    cfg = GenerateConfig(prompts=str(_prompts(tmp_path)), out=str(tmp_path / "a.jsonl"), model=str(tiny_model),
                         k=3, max_new_tokens=6, batch_prompts=4, dtype="float32", quiet=True)
    res = generate(cfg)
    assert (res["prompts"], res["generated"]) == (6, 6)
    recs = read_records(tmp_path / "a.jsonl")
    assert [r["prompt"] for r in recs] == PROMPTS and all(len(r["responses"]) == 3 for r in recs)
    assert len({r for rec in recs for r in rec["responses"]}) > 3  # sampled, not all identical
    again = generate(cfg)
    assert again["generated"] == 0 and again["reused"] == 6
    cfg.out = str(tmp_path / "b.parquet")
    generate(cfg)
    assert read_records(tmp_path / "b.parquet") == recs
    with pytest.raises(EmbrmError, match="use a .jsonl or .parquet"):
        generate(GenerateConfig(prompts="builtin", out=str(tmp_path / "x.csv")))


KILL_SCRIPT = """
import sys, time
from embrm.pipeline.generate import GenerateConfig, generate
from embrm.pipeline.annotate import AnnotateConfig, annotate
def slow(n):
    print("batch", n, flush=True)
    time.sleep(float(sys.argv[4]))
if sys.argv[1] == "generate":
    r = generate(GenerateConfig(prompts=sys.argv[2], out=sys.argv[3], model=sys.argv[5], k=2, max_new_tokens=5,
                                batch_prompts=2, dtype="float32", quiet=True), on_batch=slow)
else:
    r = annotate(AnnotateConfig(dataset=sys.argv[2], out=sys.argv[3], chunk=1, quiet=True), on_chunk=slow)
print("done", r.get("generated", r.get("scored")), flush=True)
"""


def test_generate_resumes_after_sigkill(tmp_path, tiny_model):
    script = tmp_path / "k.py"
    script.write_text(KILL_SCRIPT)
    prompts, out = _prompts(tmp_path), tmp_path / "g.jsonl"
    kill_after([str(script), "generate", str(prompts), str(out), "2", str(tiny_model)], "batch", 1)
    assert not out.exists()
    partial = [json.loads(line) for line in (tmp_path / "g.jsonl.partial.jsonl").read_text().splitlines()]
    assert len(partial) == 2
    res = subprocess.run([sys.executable, str(script), "generate", str(prompts), str(out), "0", str(tiny_model)],
                         capture_output=True, text=True, check=True).stdout
    assert "done 4" in res
    recs = read_records(out)
    assert [r["prompt"] for r in recs] == PROMPTS and recs[:2] == partial
    assert not (tmp_path / "g.jsonl.partial.jsonl").exists()


def _multi_file(tmp_path: Path) -> Path:
    p = tmp_path / "m.jsonl"
    recs = [{"prompt": "How was your day?",
             "responses": ["It was wonderful, thank you so much!", "Terrible and awful."]},
            {"prompt": "Any advice?", "responses": ["You can do it, I believe in you.", "Give up, it is hopeless."]},
            {"prompt": "Hi", "responses": ["Hello friend!", "Go away."]}]
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return p


def test_annotate_vader_and_resume(tmp_path):
    data = _multi_file(tmp_path)
    res = annotate(AnnotateConfig(dataset=str(data), quiet=True))
    assert (res["scored"], res["reward_model"]) == (3, "vader-compound")
    recs = read_records(data)
    for r in recs:
        assert r["reward_model"] == "vader-compound" and -1 <= min(r["rewards"]) and max(r["rewards"]) <= 1
        assert r["rewards"][0] > r["rewards"][1]  # kind beats unkind
    assert annotate(AnnotateConfig(dataset=str(data), quiet=True))["scored"] == 0
    script = tmp_path / "k.py"
    script.write_text(KILL_SCRIPT)
    (tmp_path / "fresh").mkdir()
    fresh = _multi_file(tmp_path / "fresh")
    out = tmp_path / "scored.jsonl"
    kill_after([str(script), "annotate", str(fresh), str(out), "2"], "batch", 2)
    assert len((tmp_path / "scored.jsonl.annotate.partial.jsonl").read_text().splitlines()) == 2
    res = subprocess.run([sys.executable, str(script), "annotate", str(fresh), str(out), "0"],
                         capture_output=True, text=True, check=True).stdout
    assert "done 1" in res
    assert [r["rewards"] for r in read_records(out)] == [r["rewards"] for r in recs]


def test_annotate_with_a_sequence_classification_model(tmp_path, tiny_model):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, num_labels=1, pad_token_id=0)
    rm_dir = tmp_path / "tiny-rm"
    LlamaForSequenceClassification(cfg).save_pretrained(rm_dir)
    tok.save_pretrained(rm_dir)
    data = _multi_file(tmp_path)
    res = annotate(AnnotateConfig(dataset=str(data), reward_model=str(rm_dir), out=str(tmp_path / "o.parquet"),
                                  batch_tokens=64, quiet=True))
    assert res["scored"] == 3 and res["reward_model"].startswith("tiny-rm@")
    recs = read_records(tmp_path / "o.parquet")
    model = LlamaForSequenceClassification.from_pretrained(rm_dir).eval()
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}],
                                   tokenize=False)
    with torch.inference_mode():
        want = model(input_ids=torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])).logits[0, 0].item()
    assert recs[2]["rewards"][1] == pytest.approx(want, abs=1e-5)
    assert len({x for r in recs for x in r["rewards"]}) == 6


def test_generate_annotate_extract_train_chain_and_reproduce(tmp_path, tiny_model):
    from embrm.extractor import extract
    from embrm.store import open_store

    from conftest import extract_config

    data = tmp_path / "r.jsonl"
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(f"Prompt {i}: say something {'nice' if i % 2 else 'bad'}." for i in range(30)))
    generate(GenerateConfig(prompts=str(prompts), out=str(data), model=str(tiny_model), k=4, max_new_tokens=16,
                            min_new_tokens=4,
                            dtype="float32", quiet=True))
    annotate(AnnotateConfig(dataset=str(data), quiet=True))
    r = extract(extract_config(data, tiny_model, tmp_path / "s", dtype="float32", quiet=True))
    assert (r.kind, r.rows) == ("multi", 120)
    rc = ReproduceConfig(qualities=(-1.0, 1.0), members=2, hidden=(16,), epochs=3)
    rows = reproduce_ensemble(open_store(tmp_path / "s"), r.model_hash, r.dataset_hash, tmp_path / "rep", rc,
                              log=lambda s: None)
    assert len(rows) == 2 * 2 * 4 + 1 and {x["aggregation"] for x in rows[:-1]} == {"mean", "min", "single", "mean-var"}
    assert rows[-1]["aggregation"].startswith("oracle") and rows[-1]["bon@4"] >= max(x["bon@4"] for x in rows[:-1])
    for f in ("ensemble.png", "ensemble.md", "ensemble.csv", "ensemble.json"):
        assert (tmp_path / "rep" / f).exists()
    assert "bon@4" in rows[0] and (tmp_path / "rep" / "runs" / "bt-perfect" / "bon.png").exists()
    rc = ReproduceConfig(methods=("bt",), qualities=(1.0,), members=2, hidden=(16,), epochs=3, seeds=3)
    rows = reproduce_ensemble(open_store(tmp_path / "s"), r.model_hash, r.dataset_hash, tmp_path / "rep3", rc,
                              log=lambda s: None)
    runs = [json.loads((tmp_path / "rep3" / "runs" / f"bt-beta1-s{s}" / "metrics.json").read_text()) for s in range(3)]
    per_seed = [m["aggregations"]["min"]["bon"][-1] for m in runs]
    mean_row = next(x for x in rows if x["aggregation"] == "min")
    assert mean_row["bon@4"] == pytest.approx(np.mean(per_seed), abs=1e-4)
    assert mean_row["bon@4_ci"] == pytest.approx(4.303 * np.std(per_seed, ddof=1) / np.sqrt(3), rel=1e-3, abs=1e-4)
    assert " +- " in (tmp_path / "rep3" / "ensemble.md").read_text()


@pytest.mark.slow
def test_demo_end_to_end_small_and_second_run_reuses(tmp_path):
    args = ["demo", "--out", str(tmp_path / "d"), "--store", str(tmp_path / "s"), "--limit", "10", "--k", "3",
            "--max-new-tokens", "8", "--members", "2", "--quiet"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "generated 10, reused 0" in res.output and "| bt | perfect | mean |" in res.output
    assert (tmp_path / "d" / "ensemble" / "ensemble.png").exists()
    res = CliRunner().invoke(cli, args)
    assert "generated 0, reused 10" in res.output and "scored 0" in res.output and "computed 0, cached 30" in res.output


def test_the_sampler_draws_from_transformers_top_k_then_top_p_distribution():
    """embrm's decoding loop samples the distribution transformers' warpers define
    (temperature, top-k, top-p, in that order), at top-k cost instead of vocabulary cost."""
    import torch
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    from embrm.pipeline.sampling import sample, sampling_probs

    torch.manual_seed(0)
    logits = torch.randn(6, 5000) * 3
    for temperature, top_k, top_p in [(0.8, 50, 0.95), (1.0, 10, 0.5), (0.5, 200, 1.0), (1.3, 50, 0.01)]:
        warp = LogitsProcessorList([TemperatureLogitsWarper(temperature), TopKLogitsWarper(top_k),
                                    TopPLogitsWarper(top_p)])
        want = torch.softmax(warp(None, logits.clone()), -1)
        p, ids = sampling_probs(logits, temperature, top_k, top_p)
        got = torch.zeros_like(want).scatter_(1, ids, p)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    draws = torch.stack([sample(logits[:1], 1.0, 10, 0.5) for _ in range(3000)]).flatten()
    p, ids = sampling_probs(logits[:1], 1.0, 10, 0.5)
    freq = torch.tensor([(draws == i).float().mean() for i in ids[0]])
    assert torch.allclose(freq, p[0], atol=0.03) and set(draws.tolist()) <= set(ids[0][p[0] > 0].tolist())
