"""``embrm reproduce layers`` on a tiny real model with three stored layers."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from embrm.cli import main as cli
from embrm.errors import EmbrmError
from embrm.pipeline.reproduce_layers import cv_splits, ordered_layers
from embrm.rm import TrainConfig, train
from embrm.rm.experiment import DataConfig, from_embeddings, make_training_pairs
from embrm.store import open_store


def _pairs_file(path, n=72):
    """Preference pairs a model can learn from the text: the chosen reply is kind."""
    rng = np.random.default_rng(0)
    kind, rude = ["thank you, glad to help", "happy to explain", "sure, here it is"], ["go away", "no.", "whatever"]
    recs = [{"prompt": f"Question {i} about {rng.choice(['cats', 'tax', 'rain'])}?",
             "chosen": f" {kind[i % 3]} ({i})", "rejected": f" {rude[(i + 1) % 3]} ({i})"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_reproduce_layers_writes_outputs_equal_to_separate_training_runs(tmp_path, tiny_model):
    data, store = _pairs_file(tmp_path / "pairs.jsonl"), tmp_path / "store"
    run = CliRunner()
    res = run.invoke(cli, ["extract", "--dataset", str(data), "--model", str(tiny_model), "--layers", "-1,0,1",
                           "--dtype", "float32", "--store", str(store), "--quiet"])
    assert res.exit_code == 0, res.output
    s = open_store(store)
    e = s.entries()[0]
    out = tmp_path / "layers"
    res = run.invoke(cli, ["reproduce", "layers", "--model-key", e.model_hash, "--dataset-key", e.dataset_hash,
                           "--methods", "logreg,linear", "--folds", "3", "--combine", "concat,mean", "--seed", "1",
                           "--out", str(out), "--store", str(store)])
    assert res.exit_code == 0, res.output
    for f in ("layers.png", "layers.md", "layers.csv", "layers.json"):
        assert (out / f).stat().st_size > 0, f
    result = json.loads((out / "layers.json").read_text())
    labels = [r["features"] for r in result["rows"]]
    assert labels == [lab for lab in ("layer 0", "layer 1", "layer -1", "concat of layers", "mean of layers")
                      for _ in range(2)]
    assert result["last"] == "layer -1" and result["prompts"] == 72
    with open(out / "layers.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 10
    assert "layer -1" in (out / "layers.md").read_text()

    # every layer's numbers: the same folds trained one by one with `train`, scored by hand
    layer_x = {}
    for layer in (0, 1, -1):
        ds = from_embeddings(s.load(e.model_hash, e.dataset_hash, layer=layer))
        layer_x[layer] = ds.x
        for method in ("logreg", "linear"):
            correct, per_fold = [], []
            for f, (tr, va, te) in enumerate(cv_splits(ds.n_prompts, 3, 0.2, 1)):
                dc = DataConfig(seed=1)
                model = train(ds.x, make_training_pairs(ds, dc, tr),
                              make_training_pairs(ds, dc, va, 1000, held_out=True),
                              TrainConfig(method=method, seed=1 + f))
                score = model.score(ds.x).mean(0)
                test = np.isin(ds.pairs.prompt, te)
                a, b = ds.pairs.a[test], ds.pairs.b[test]  # stored chosen first: the label is always "a wins"
                c = np.where(score[a] == score[b], 0.5, score[a] > score[b])
                correct.append(c)
                per_fold.append(c.mean())
            row = next(r for r in result["rows"] if r["features"] == f"layer {layer}" and r["method"] == method)
            assert row["mean"] == pytest.approx(np.concatenate(correct).mean(), abs=1e-12)
            assert row["fold_means"] == pytest.approx(per_fold, abs=1e-12)
            assert row["ci_low"] <= row["mean"] <= row["ci_high"] and row["units"] == 72
    assert not np.allclose(layer_x[0], layer_x[-1])  # the layers really differ
    last = {r["method"]: r["mean"] for r in result["rows"] if r["features"] == "layer -1"}
    for r in result["rows"]:
        assert r["vs_last"] == pytest.approx(r["mean"] - last[r["method"]], abs=1e-12)


def test_layer_order_folds_and_bad_requests(tmp_path, tiny_model):
    assert ordered_layers([-1, 8, 0, -4, 4]) == [0, 4, 8, -4, -1]
    folds = cv_splits(50, 5, 0.2, 0)
    tests = np.concatenate([te for _, _, te in folds])
    assert sorted(tests) == list(range(50))  # each prompt held out exactly once
    for tr, va, te in folds:
        assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
        assert len(tr) + len(va) + len(te) == 50
    assert len(np.concatenate([te for _, _, te in cv_splits(50, 5, 0.2, 0, prompts=20)])) == 20
    with pytest.raises(EmbrmError, match="too few"):
        cv_splits(6, 5, 0.2, 0)
    data, store = _pairs_file(tmp_path / "pairs.jsonl", n=20), tmp_path / "store"
    run = CliRunner()
    assert run.invoke(cli, ["extract", "--dataset", str(data), "--model", str(tiny_model), "--dtype", "float32",
                            "--store", str(store), "--quiet"]).exit_code == 0
    e = open_store(store).entries()[0]
    keys = ["--model-key", e.model_hash, "--dataset-key", e.dataset_hash, "--store", str(store)]
    res = run.invoke(cli, ["reproduce", "layers", *keys, "--combine", "concat", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "needs an entry extracted with several" in res.output
    res = run.invoke(cli, ["reproduce", "layers", *keys, "--folds", "1"])
    assert res.exit_code == 2 and "error:" in res.output
