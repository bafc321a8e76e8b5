"""Reward models: estimators against brute force, trainers on known rewards, runs, CLI."""
from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from embrm.cli import main as cli
from embrm.errors import EmbrmError
from embrm.rm import TrainConfig, aggregate, best_of_n, build_pairs, split_prompts, train
from embrm.rm.evaluate import evaluate_multi
from embrm.rm.experiment import DataConfig, eval_from_store, score_from_store, train_from_store
from embrm.rm.metrics import bon_quantile, expected_calibration_error, spearman_per_prompt
from embrm.rm.pairs import annotate, make_pairs
from embrm.rm.run import load_run
from embrm.store import item_key, open_store


def test_best_of_n_matches_brute_force_enumeration():
    rng = np.random.default_rng(0)
    for k in (2, 3, 5, 7):
        proxy = rng.standard_normal((4, k))
        gold = rng.standard_normal((4, k))
        ns = list(range(1, k + 1))
        got = best_of_n(proxy, gold, ns)
        for p in range(4):
            for c, n in enumerate(ns):
                picks = [gold[p, max(s, key=lambda i: proxy[p, i])] for s in itertools.combinations(range(k), n)]
                assert got[p, c] == pytest.approx(np.mean(picks), abs=1e-12)
    # oracle and members broadcast
    assert best_of_n(np.stack([gold, -gold]), gold, [k])[0, :, 0] == pytest.approx(gold.max(1))
    assert best_of_n(gold, gold, [1])[:, 0] == pytest.approx(gold.mean(1))
    q = bon_quantile(gold, gold, [k])
    assert q[:, 0] == pytest.approx(np.ones(4))


def test_best_of_n_is_vectorised_and_stable_for_large_k():
    rng = np.random.default_rng(1)
    proxy = rng.standard_normal((3, 200, 500))
    gold = rng.standard_normal((200, 500))
    out = best_of_n(proxy, gold, [1, 2, 300, 500])
    assert np.isfinite(out).all() and out.shape == (3, 200, 4)
    np.testing.assert_allclose(out[..., 0], np.broadcast_to(gold.mean(1), (3, 200)), atol=1e-9)
    np.testing.assert_allclose(out[..., 3], np.take_along_axis(np.broadcast_to(gold, proxy.shape),
                                                               proxy.argmax(-1)[..., None], -1)[..., 0], atol=1e-9)


def test_bon_bad_input():
    g = np.zeros((3, 4))
    with pytest.raises(EmbrmError, match="N=5 is larger than the 4 responses"):
        best_of_n(g, g, [1, 5])
    with pytest.raises(EmbrmError, match="at least 2 responses"):
        best_of_n(np.zeros((3, 1)), np.zeros((3, 1)), [1])
    with pytest.raises(EmbrmError, match="NaN or inf"):
        best_of_n(np.full((3, 4), np.nan), g, [1])


def test_aggregations_and_metrics():
    s = np.array([[1.0, 4.0], [3.0, 0.0], [2.0, 2.0]])
    np.testing.assert_allclose(aggregate(s, "mean"), [2, 2])
    np.testing.assert_allclose(aggregate(s, "min"), [1, 0])
    np.testing.assert_allclose(aggregate(s, "single"), [1, 4])
    np.testing.assert_allclose(aggregate(s, "mean-var", 0.5), [2 - 0.5 * np.var([1, 3, 2]), 2 - 0.5 * np.var([4, 0, 2])])
    np.testing.assert_allclose(aggregate(s, "mean-std", 2), [2 - 2 * np.std([1, 3, 2]), 2 - 2 * np.std([4, 0, 2])])
    sp = spearman_per_prompt(np.array([[1, 2, 3], [1, 1, 1]]), np.array([[3, 2, 1], [1, 2, 3]]))
    assert sp[0] == pytest.approx(-1) and np.isnan(sp[1])
    ece, *_ = expected_calibration_error(np.full(1000, 10.0), np.zeros(1000), np.ones(1000))
    assert ece < 1e-3
    ece, *_ = expected_calibration_error(np.full(1000, 10.0), np.zeros(1000), np.zeros(1000))
    assert ece > 0.99
    from embrm.rm.metrics import pairwise_accuracy

    assert pairwise_accuracy(np.array([2.0, 1.0, 1.0]), np.array([1.0, 3.0, 1.0]), np.array([1.0, 1.0, 0.0])) == 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" from a held-out set of all-tied golds
        assert np.isnan(pairwise_accuracy(np.zeros(0), np.zeros(0), np.zeros(0)))


def test_pairs_annotators_and_splits():
    rng = np.random.default_rng(0)
    r = rng.standard_normal((50, 6))
    tr, va = split_prompts(50, 0.2, 0)
    assert len(va) == 10 and not set(tr) & set(va) and len(tr) + len(va) == 50
    a, b, pid = make_pairs(r, tr, 3, "within", "random", 0)
    assert (a // 6 == b // 6).all() and (a != b).all() and set(a // 6) <= set(tr)
    a, b, _ = make_pairs(r, tr, 1, "within", "extreme", 0)
    flat = r.reshape(-1)
    np.testing.assert_allclose(np.maximum(flat[a], flat[b]), r[tr].max(1))
    a, b, _ = make_pairs(r, tr, 2, "cross", "random", 0)
    assert (a // 6 != b // 6).all()
    d = rng.standard_normal(20000)
    perfect = annotate(d, np.zeros_like(d), -1.0)
    assert (perfect == (d > 0)).all()
    acc = [np.mean(annotate(d, np.zeros_like(d), beta, 1.0, seed=1) == (d > 0)) for beta in (0.0, 1.0, 10.0)]
    assert acc[0] == pytest.approx(0.5, abs=0.02) and acc[0] < acc[1] < acc[2]
    p1 = build_pairs(r, tr, 2, "within", "random", 1.0, None, 7)
    p2 = build_pairs(r, tr, 2, "within", "random", 1.0, None, 7)
    assert (p1.a == p2.a).all() and (p1.y == p2.y).all()


def _synthetic(p=300, k=8, d=24, nonlinear=False, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((p * k, d)).astype(np.float32)
    w = rng.standard_normal(d)
    r = x @ w
    if nonlinear:
        r = x[:, 0] ** 2 + 2 * np.tanh(x[:, 1]) + np.abs(x[:, 2])
    return x, r.reshape(p, k)


@pytest.mark.parametrize("method", ["bt", "clf"])
@pytest.mark.parametrize("nonlinear", [False, True])
def test_trainers_recover_a_known_reward(method, nonlinear):
    x, r = _synthetic(p=500, d=12, nonlinear=nonlinear)
    tr, va = split_prompts(len(r), 0.2, 0)
    tp = build_pairs(r, tr, 20, "within", "random", -1, None, 0)
    vp = build_pairs(r, va, 10, "within", "random", -1, None, 1)
    m = train(x, tp, vp, TrainConfig(method=method, ensemble=2, hidden=(128, 64), max_epochs=60, batch_size=256,
                                     patience=5))
    s = m.score(x).reshape(2, len(r), -1)
    rho = np.nanmean(spearman_per_prompt(s.mean(0)[va], r[va]))
    assert rho >= 0.9, rho


def test_linear_and_lightgbm_and_accuracy_falls_with_annotation_quality():
    x, r = _synthetic(p=400)
    tr, va = split_prompts(len(r), 0.25, 0)
    accs = {}
    for beta in (-1.0, 1.0, 0.1):
        tp = build_pairs(r, tr, 5, "within", "random", beta, None, 0)
        vp = build_pairs(r, va, 5, "within", "random", beta, None, 1)
        m = train(x, tp, vp, TrainConfig(method="linear", ensemble=3, max_epochs=40, lr=1e-2, batch_size=256))
        ev = evaluate_multi(m.score(x).reshape(3, len(r), -1)[:, va], r[va], [1, 2, 8])
        accs[beta] = ev["aggregations"]["mean"]["pairwise_accuracy"]
    assert accs[-1.0] > 0.95 and accs[-1.0] > accs[1.0] > accs[0.1], accs
    tp = build_pairs(r, tr, 5, "within", "random", -1, None, 0)
    vp = build_pairs(r, va, 5, "within", "random", -1, None, 1)
    g = train(x, tp, vp, TrainConfig(method="lgbm", ensemble=2, lgbm_rounds=200))
    ev = evaluate_multi(g.score(x).reshape(2, len(r), -1)[:, va], r[va], [1, 2, 8])
    assert ev["aggregations"]["mean"]["pairwise_accuracy"] > 0.7


@pytest.mark.parametrize("method", ["bt", "clf"])
def test_validation_loss_equals_the_per_pair_loss(method):
    """Validation scores each item once for all members; it must equal the plain per-pair loss."""
    import torch
    import torch.nn.functional as F

    from embrm.rm.models import EnsembleMLP
    from embrm.rm.pairs import Pairs
    from embrm.rm.trainer import _Validation

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((50, 8)).astype(np.float32))
    pairs = Pairs(rng.integers(0, 50, 300), rng.integers(0, 50, 300), rng.integers(0, 2, 300).astype(np.float32),
                  np.arange(300))
    net = EnsembleMLP(3, 8, (16,), seed=1)
    got = _Validation(x, pairs, 3, chunk=7)(net, method)  # a chunk that does not divide the items
    with torch.no_grad():
        ra, rb = net(x[pairs.a]), net(x[pairs.b])
        y = torch.from_numpy(pairs.y)
        if method == "clf":
            want = (F.binary_cross_entropy_with_logits(ra, y.expand(3, -1), reduction="none")
                    + F.binary_cross_entropy_with_logits(rb, 1 - y.expand(3, -1), reduction="none")).mean(1) / 2
        else:
            want = torch.stack([F.binary_cross_entropy_with_logits(ra[m] - rb[m], y) for m in range(3)])
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5)


def test_member_groups_give_the_same_rewards_and_gradients():
    """Running members a few at a time is only a schedule: rewards and every member's
    gradients equal those of one batched matmul over all members."""
    import torch

    from embrm.rm.models import EnsembleMLP
    from embrm.rm.models import members_per_group

    gen = torch.Generator().manual_seed(0)
    table = torch.randn(40, 6, generator=gen)
    index = torch.randint(0, 40, (5, 12), generator=gen)
    out = {}
    for group in (5, 2, 1):  # 5: all members in one batched matmul
        net = EnsembleMLP(5, 6, (8, 4), seed=3)
        r = net.forward_rows(table, index, group)
        (r * torch.arange(1.0, 6.0)[:, None]).sum().backward()  # a different weight a member
        out[group] = (r.detach(), [w.grad.clone() for w in net.weights], net(table, group).detach())
    for group in (2, 1):
        torch.testing.assert_close(out[group][0], out[5][0])
        torch.testing.assert_close(out[group][2], out[5][2])
        for g, want in zip(out[group][1], out[5][1]):
            torch.testing.assert_close(g, want)
    assert out[5][0][3, 7] == out[5][2][3, index[3, 7]]  # member m scores row index[m]
    assert members_per_group(10, 2048, (1024, 512), 2) < 10 == members_per_group(10, 512, (64,), 2)
    assert members_per_group(10, 10**7, (4096,), 4) == 1 and members_per_group(10, 10**7, (), 4) == 10


def test_bf16_and_fp32_training_agree():
    """bf16 compute (embeddings cast once) learns the same ranking as fp32."""
    x, r = _synthetic(p=200, d=12)
    tr, va = split_prompts(len(r), 0.2, 0)
    tp = build_pairs(r, tr, 10, "within", "random", -1, None, 0)
    vp = build_pairs(r, va, 10, "within", "random", -1, None, 1)
    scores = {}
    for bf16 in (False, True):
        m = train(x, tp, vp, TrainConfig(ensemble=2, hidden=(64,), max_epochs=20, batch_size=128, bf16=bf16))
        scores[bf16] = m.score(x).mean(0).reshape(len(r), -1)
    rho = np.nanmean(spearman_per_prompt(scores[True][va], scores[False][va]))
    assert rho > 0.95, rho
    assert np.nanmean(spearman_per_prompt(scores[True][va], r[va])) > 0.9


def test_ensemble_members_differ_and_train_bad_input():
    x, r = _synthetic(p=100)
    tr, va = split_prompts(100, 0.2, 0)
    tp = build_pairs(r, tr, 4, "within", "random", -1, None, 0)
    vp = build_pairs(r, va, 4, "within", "random", -1, None, 1)
    m = train(x, tp, vp, TrainConfig(ensemble=3, hidden=(32,), max_epochs=3, bootstrap=True))
    s = m.score(x)
    assert s.shape == (3, 800) and not np.allclose(s[0], s[1])
    with pytest.raises(EmbrmError, match="dim 5 but the reward model was trained on dim 24"):
        m.score(np.zeros((3, 5), np.float32))
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(EmbrmError, match="NaN or inf"):
        train(bad, tp, vp, TrainConfig())
    with pytest.raises(EmbrmError, match="NaN or inf"):
        annotate(np.array([1.0, np.inf]), np.zeros(2), 1.0)


def _multi_store(path, p=60, k=6, d=16, seed=0):
    """A store entry of multi-response data with golden rewards (a known linear reward)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((p * k, d)).astype(np.float32)
    r = (x @ rng.standard_normal(d)).reshape(p, k)
    store = open_store(path, create=True)
    rows = [{"position": i, "item_key": item_key(f"p{i // k}", f"r{i}"), "prompt_id": i // k,
             "response_index": i % k, "role": "", "label": None, "reward": float(r.reshape(-1)[i]),
             "prompt": f"p{i // k}", "response": f"r{i}"} for i in range(p * k)]
    store.write_dataset_rows("d" * 64, rows, len(rows))
    store.begin_entry("m" * 64, "synthetic-model", {}, "d" * 64, "synthetic-data", {}, "multi", len(rows))
    store.write_vectors("m" * 64, [r_["item_key"] for r_ in rows], {-1: x}, np.ones(len(rows)), np.zeros(len(rows), bool))
    store.finish_entry("m" * 64, "d" * 64)
    return store


def test_train_eval_score_run_directory(tmp_path):
    store = _multi_store(tmp_path / "store")
    out = tmp_path / "run"
    model, metrics = train_from_store(store, "synthetic-model", "synthetic-data",
                                      TrainConfig(ensemble=3, hidden=(64, 32), max_epochs=20),
                                      DataConfig(annotation_quality=-1), out=out, ns=[1, 2, 4, 6])
    for f in ("config.json", "weights.safetensors", "metrics.json", "bon.png", "calibration.png"):
        assert (out / f).exists(), f
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_hash"] == "m" * 64 and cfg["train"]["ensemble"] == 3 and cfg["embrm_version"]
    assert metrics["aggregations"]["mean"]["bon"][-1] > metrics["random"]
    loaded, _ = load_run(out)
    np.testing.assert_allclose(loaded.score(store.load("synthetic-model", "synthetic-data").vectors),
                               model.score(store.load("synthetic-model", "synthetic-data").vectors), rtol=1e-5)
    ev = eval_from_store(out, store, "synthetic-data", [1, 2, 6])
    assert ev["split"] == "validation" and ev["prompts"] == len(cfg["val_prompts"])
    assert ev["aggregations"]["mean"]["bon"] == pytest.approx(
        [metrics["aggregations"]["mean"]["bon"][i] for i in (0, 1, 3)])
    import pyarrow.parquet as pq

    t = pq.read_table(score_from_store(out, store, "synthetic-data", tmp_path / "s.parquet"))
    assert t.num_rows == 360 and t.schema.field("member_scores").type.list_size == 3
    cfg["run_format"] = 99
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EmbrmError, match="run format 99"):
        load_run(out)


def test_cli_train_and_eval(tmp_path):
    _multi_store(tmp_path / "store")
    r = CliRunner()
    res = r.invoke(cli, ["train", "--model-key", "synthetic-model", "--dataset-key", "ddd", "--method", "clf",
                         "--ensemble", "2", "--hidden", "32", "--epochs", "5", "--bon", "1,2,6",
                         "--out", str(tmp_path / "run"), "--store", str(tmp_path / "store")])
    assert res.exit_code == 0, res.output
    assert "BoN@6" in res.output and "mean" in res.output and "(oracle)" in res.output
    res = r.invoke(cli, ["eval", str(tmp_path / "run"), "--dataset-key", "ddd", "--bon", "1,2,7",
                         "--store", str(tmp_path / "store")])
    assert res.exit_code == 2 and "N=7 is larger than the 6 responses" in res.output
    res = r.invoke(cli, ["eval", str(tmp_path / "nope"), "--dataset-key", "ddd", "--store", str(tmp_path / "store")])
    assert res.exit_code == 2 and "not an embrm run directory" in res.output
    res = r.invoke(cli, ["score", str(tmp_path / "run"), "--dataset-key", "ddd", "--out", str(tmp_path / "s.parquet"),
                         "--store", str(tmp_path / "store")])
    assert res.exit_code == 0 and (tmp_path / "s.parquet").exists()


def test_missing_lightgbm_is_one_clear_line(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "lightgbm", None)  # what an environment without it looks like
    x, r = _synthetic(p=20)
    tp = build_pairs(r, np.arange(15), 2, "within", "random", -1, None, 0)
    vp = build_pairs(r, np.arange(15, 20), 2, "within", "random", -1, None, 0)
    with pytest.raises(EmbrmError, match="method lgbm needs LightGBM"):
        train(x, tp, vp, TrainConfig(method="lgbm"))
