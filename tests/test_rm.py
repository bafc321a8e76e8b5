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
from embrm.store import open_store

from conftest import store_entry


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
    np.testing.assert_allclose(aggregate(s, "mean-var", 0.5),
                               [2 - 0.5 * np.var([1, 3, 2]), 2 - 0.5 * np.var([4, 0, 2])])
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


@pytest.mark.parametrize("method", ["bt", "clf", "mixed"])
def test_validation_loss_equals_the_per_pair_loss(method):
    """Validation scores each item once for all members; it must equal the plain per-pair
    loss, per member's own loss (a grid mixes BT and CLF members), and its Bradley-Terry
    log-loss must be the BT loss whatever the member trained on."""
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
    clf = {"bt": None, "clf": torch.tensor([True] * 3), "mixed": torch.tensor([True, False, True])}[method]
    got, got_bt = _Validation(x, pairs, 3, chunk=7)(net, clf)  # a chunk that does not divide the items
    with torch.no_grad():
        ra, rb = net(x[pairs.a]), net(x[pairs.b])
        y = torch.from_numpy(pairs.y)
        pointwise = (F.binary_cross_entropy_with_logits(ra, y.expand(3, -1), reduction="none")
                     + F.binary_cross_entropy_with_logits(rb, 1 - y.expand(3, -1), reduction="none")).mean(1) / 2
        bt = torch.stack([F.binary_cross_entropy_with_logits(ra[m] - rb[m], y) for m in range(3)])
    want = bt if clf is None else torch.where(clf, pointwise, bt)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5)
    np.testing.assert_allclose(got_bt, bt.numpy(), rtol=1e-5)


def test_member_groups_give_the_same_rewards_and_gradients():
    """Running members a few at a time is only a schedule: rewards and every member's
    gradients equal those of one batched matmul over all members."""
    import torch

    from embrm.rm.models import EnsembleMLP, members_per_group

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


def test_members_scoring_the_same_rows_equal_plain_per_member_matmuls():
    """The shared-rows path (first layer as one matmul over every member's columns)
    against each member's layers applied one by one, for values and gradients."""
    import torch

    from embrm.rm.models import EnsembleMLP

    gen = torch.Generator().manual_seed(1)
    for hidden in ((), (8,), (8, 4)):
        net = EnsembleMLP(4, 6, hidden, seed=2)
        x = torch.randn(9, 6, generator=gen, requires_grad=True)
        got = net(x)
        want = []
        for m in range(4):
            h = x
            for i, (w, b) in enumerate(zip(net.weights, net.biases)):
                h = h @ w[m] + b[m]
                h = torch.relu(h) if i < len(hidden) else h
            want.append(h.squeeze(-1))
        want = torch.stack(want)
        torch.testing.assert_close(got, want)
        weights = torch.arange(1.0, 37.0).view(4, 9)
        g_got = torch.autograd.grad((got * weights).sum(), [x, *net.weights])
        g_want = torch.autograd.grad((want * weights).sum(), [x, *net.weights])
        for a, b in zip(g_got, g_want):
            torch.testing.assert_close(a, b)


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
    return store_entry(path, x, (x @ rng.standard_normal(d)).reshape(p, k))


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


def test_ece_means_something_on_pairwise_data():
    """A calibrated model has ECE near 0, a model saying 0.5 near |mean label - 0.5|, and
    a chance-level model on winner-first pairs near 0 (each pair counted in both orders),
    not 1 - mean p(winner) ~ 0.5."""
    from embrm.rm.metrics import binned_calibration

    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 200_000)
    assert binned_calibration(p, rng.random(len(p)) < p)[0] < 0.01  # labels drawn at the stated odds
    y = (rng.random(10_000) < 0.8).astype(float)
    assert binned_calibration(np.full(len(y), 0.5), y)[0] == pytest.approx(abs(y.mean() - 0.5), abs=1e-9)
    d = rng.standard_normal(20_000)  # the true log-odds that the first item wins
    won = rng.random(len(d)) < 1 / (1 + np.exp(-d))
    sa, sb = np.where(won, d, 0.0), np.where(won, 0.0, d)  # stored winner first, as pairs are
    ece, conf, acc, cnt = expected_calibration_error(sa, sb, np.ones(len(d)))
    assert ece < 0.02 and cnt.sum() == 2 * len(d)
    ok = cnt > 0
    np.testing.assert_allclose(conf[ok], acc[ok], atol=0.05)  # the reliability plot agrees
    noise = rng.standard_normal((2, 20_000)) * 0.01  # a model near chance
    assert expected_calibration_error(noise[0], noise[1], np.ones(20_000))[0] < 0.02


def test_member_adamw_equals_torch_adamw_and_members_keep_their_rates():
    import torch

    from embrm.rm.optim import MemberAdamW

    torch.manual_seed(0)
    w1 = torch.nn.Parameter(torch.randn(3, 5, 4))
    w2 = torch.nn.Parameter(w1.detach().clone())
    ref = torch.optim.AdamW([w1], lr=1e-2, weight_decay=0.1)
    mine = MemberAdamW([w2], torch.full((3,), 1e-2), torch.full((3,), 0.1))
    for _ in range(25):
        g = torch.randn(3, 5, 4)
        w1.grad, w2.grad = g.clone(), g.clone()
        ref.step()
        mine.step()
    torch.testing.assert_close(w2, w1, atol=1e-6, rtol=0)
    # member m with its own rate moves exactly as a lone AdamW with that rate
    rates, decays = torch.tensor([1e-3, 1e-2, 1e-1]), torch.tensor([0.0, 0.1, 0.5])
    w = torch.nn.Parameter(torch.randn(3, 4))
    alone = [torch.nn.Parameter(w[m].detach().clone()) for m in range(3)]
    opts = [torch.optim.AdamW([alone[m]], lr=float(rates[m]), weight_decay=float(decays[m])) for m in range(3)]
    mine = MemberAdamW([w], rates, decays)
    for _ in range(10):
        g = torch.randn(3, 4)
        w.grad = g.clone()
        mine.step()
        for m in range(3):
            alone[m].grad = g[m].clone()
            opts[m].step()
    torch.testing.assert_close(w.detach(), torch.stack([a.detach() for a in alone]), atol=1e-6, rtol=0)


def test_small_data_trains_for_enough_steps():
    """A few hundred pairs: the batch adapts so that training takes many steps, and the
    kept model is well below the chance loss ln 2 (a fixed batch of 1024 was one step an
    epoch and stopped near ln 2)."""
    from embrm.rm.trainer import MIN_STEPS, batch_for

    assert batch_for(480, TrainConfig()) == 30 and batch_for(100_000, TrainConfig()) == 1024
    assert batch_for(100, TrainConfig()) == 16 and batch_for(480, TrainConfig(batch_size=64)) == 64
    x, r = _synthetic(p=120, k=4, d=32)
    tr, va = split_prompts(len(r), 0.2, 0)
    tp = build_pairs(r, tr, 5, "within", "random", -1, None, 0)  # 480 pairs
    vp = build_pairs(r, va, 5, "within", "random", -1, None, 1)
    m = train(x, tp, vp, TrainConfig(ensemble=2, hidden=(64,)))
    assert m.log.batch_size == 30 and m.log.steps >= MIN_STEPS
    assert max(m.log.val_loss) < 0.5 * np.log(2), m.log.val_loss


def test_tune_picks_the_argmin_of_validation_loss_across_families(tmp_path):
    from embrm.rm.tune import Block, Grid, tune

    x, r = _synthetic(p=150, k=4, d=16)
    tr, va = split_prompts(len(r), 0.2, 0)
    tp = build_pairs(r, tr, 5, "within", "random", 1.0, None, 0)
    vp = build_pairs(r, va, 5, "within", "random", 1.0, None, 1)
    grid = Grid(l2=(1e-3, 1e-1, 10.0), blocks=tuple(Block(h, m, (1e-5, 1e-2), (0.0, 0.1))
                                                    for h, m in (((), ("linear",)), ((8,), ("bt", "clf")),
                                                                 ((32,), ("bt",)))))
    chosen, results = tune(x, tp, vp, TrainConfig(max_epochs=10), grid, inner_folds=1)
    count = {m: sum(g["method"] == m for g in results) for m in ("logreg", "logreg-clf", "linear", "bt", "clf")}
    assert count == {"logreg": 3, "logreg-clf": 3, "linear": 4, "bt": 8, "clf": 4}
    best = min(results, key=lambda g: g["val_loss"])
    assert (chosen.method, chosen.l2, chosen.standardize) == (best["method"], best["l2"], best["standardize"])
    if best["lr"] is not None:
        assert (chosen.lr, chosen.weight_decay, list(chosen.hidden)) == (best["lr"], best["weight_decay"],
                                                                         best["hidden"])
    # a logreg row is the fit on the training pairs alone, judged by its validation log-loss
    lone = train(x, tp, vp, TrainConfig(method="logreg", l2=0.1)).validation_model
    s = lone.score(x)[0].astype(np.float64)
    want = np.mean(np.logaddexp(0, -(s[vp.a] - s[vp.b]) * np.where(vp.y > 0.5, 1, -1)))
    row = next(g for g in results if g["method"] == "logreg" and g["l2"] == 0.1)
    assert row["val_loss"] == pytest.approx(want, rel=1e-5)
    # a grid member (BT and CLF batched together) learns as the same setting trained alone
    alone = train(x, tp, vp, TrainConfig(max_epochs=10, hidden=(8,), lr=1e-2, weight_decay=0.1, ensemble=1, seed=0))
    member = next(g for g in results if g["method"] == "bt" and g["hidden"] == [8] and g["lr"] == 1e-2
                  and g["weight_decay"] == 0.1)
    assert member["val_loss"] == pytest.approx(alone.log.val_loss[0], rel=0.3)
    assert all(g["val_loss"] > 0.6 for g in results if g["lr"] == 1e-5)  # 1e-5 barely moves in 10 epochs

    _multi_store(tmp_path / "store")
    # the command line: the whole grid in metrics.json, its argmin trained (the MLP widths
    # are left out here only to keep the test fast; the same code trains them above)
    res = CliRunner().invoke(cli, ["train", "--model-key", "synthetic-model", "--dataset-key", "ddd", "--tune",
                                   "--method", "linear", "--epochs", "4", "--ensemble", "2", "--bon", "1,2,6",
                                   "--out", str(tmp_path / "run"), "--store", str(tmp_path / "store")])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())["tune"]
    assert len(saved["grid"]) == 9 and "tuned over 9 settings: picked linear" in res.output
    best = min(saved["grid"], key=lambda g: g["val_loss"])
    trained = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert saved["chosen"]["method"] == best["method"] == trained["method"] and trained["ensemble"] == 2
    assert saved["chosen"]["l2"] == best["l2"] and f"{best['val_loss']:.4f}" in res.output
    res = CliRunner().invoke(cli, ["train", "--model-key", "synthetic-model", "--dataset-key", "ddd", "--tune",
                                   "--method", "lgbm", "--store", str(tmp_path / "store")])
    assert res.exit_code == 2 and "LightGBM has its own early stopping" in res.output


def test_tune_on_small_data_judges_every_setting_over_inner_folds():
    """Below INNER_BELOW pairs each setting's log-loss is its mean over prompt-disjoint
    inner folds of the training and validation pairs; checked against each fold's fit
    scored by a plain log-loss."""
    from embrm.rm.tune import INNER_BELOW, INNER_FOLDS, INNER_FOLDS_LARGE, Grid, inner_folds_for, inner_splits, tune

    x, r = _synthetic(p=60, k=4, d=16)
    tr, va = split_prompts(len(r), 0.2, 0)
    tp = build_pairs(r, tr, 3, "within", "random", 1.0, None, 0)
    vp = build_pairs(r, va, 3, "within", "random", 1.0, None, 1)
    assert len(tp) + len(vp) < INNER_BELOW and inner_folds_for(len(tp) + len(vp)) == INNER_FOLDS > 1
    assert inner_folds_for(INNER_BELOW) == INNER_FOLDS_LARGE > 1
    splits = inner_splits(tp, vp, 3, seed=4)
    for a, b in splits:  # prompt-disjoint, and every pair is validated exactly once
        assert not set(a.prompt) & set(b.prompt) and len(a) + len(b) == len(tp) + len(vp)
    assert sorted(np.concatenate([b.a for _, b in splits])) == sorted(np.concatenate([tp.a, vp.a]))
    lams = (1e-3, 1e-1, 10.0)
    chosen, results = tune(x, tp, vp, TrainConfig(seed=4), Grid(l2=lams), families=("logreg",), inner_folds=3)
    assert [g["l2"] for g in results] == list(lams)
    for g in results:
        want = []
        for a, b in splits:
            s = train(x, a, b, TrainConfig(method="logreg", l2=g["l2"])).validation_model.score(x)[0]
            d = (s[b.a] - s[b.b]).astype(np.float64) * np.where(b.y > 0.5, 1, -1)
            want.append(np.mean(np.logaddexp(0, -d)))
        np.testing.assert_allclose(g["fold_val_loss"], want, rtol=1e-4)
        assert g["val_loss"] == pytest.approx(np.mean(want), rel=1e-4)
        assert g["val_loss_se"] == pytest.approx(np.std(want, ddof=1) / np.sqrt(3), rel=1e-3)
    assert chosen.l2 == min(results, key=lambda g: g["val_loss"])["l2"]
    _, default = tune(x, tp, vp, TrainConfig(seed=4), Grid(l2=lams), families=("logreg",))
    assert len(default[0]["fold_val_loss"]) == INNER_FOLDS


def test_tune_keeps_a_flexible_model_only_where_its_lead_beats_the_folds_noise():
    """The one-standard-error rule of choose(), on hand-made grid rows."""
    from embrm.rm.tune import choose

    def row(method, loss, se=0.0, hidden=(), l2=None):
        return {"method": method, "val_loss": loss, "val_loss_se": se, "hidden": list(hidden), "l2": l2}

    mlp = row("bt", 0.600, 0.020, (1024, 512))
    rows = [mlp, row("bt", 0.610, 0.02, (64,)), row("linear", 0.618, 0.02), row("logreg", 0.619, 0.02, l2=1.0),
            row("logreg", 0.650, 0.02, l2=10.0)]
    assert choose(rows)["l2"] == 1.0  # within 0.600 + 0.020: the simplest, a logistic regression
    rows[3]["val_loss"] = 0.625  # now outside the bar: the linear model is the simplest left
    assert choose(rows)["method"] == "linear"
    rows[2]["val_loss"] = 0.621
    assert choose(rows)["hidden"] == [64]  # then the narrowest MLP
    assert choose([{**r, "val_loss_se": 0.0} for r in rows])["hidden"] == [1024, 512]  # no noise: least loss
    one_split = [{k: v for k, v in r.items() if k != "val_loss_se"} for r in rows]
    assert choose(one_split)["hidden"] == [1024, 512]  # one split: the least loss


def test_pairwise_prompt_ids_follow_prompt_text_so_splits_are_prompt_disjoint(tmp_path, tiny_model):
    """Records repeating a prompt share its id; training's validation split and `eval` on
    the training data then never see a prompt text from the other side."""
    from embrm.extractor import extract
    from embrm.rm.experiment import from_embeddings, make_training_pairs

    from conftest import extract_config

    recs = [{"prompt": f"Question {i % 7}?", "chosen": f" good {i}", "rejected": f" bad {i}"} for i in range(40)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    res = extract(extract_config(data, tiny_model, tmp_path / "store", dtype="float32", quiet=True))
    store = open_store(tmp_path / "store")
    emb = store.load(res.model_hash, res.dataset_hash)
    assert len(set(emb.prompt_id)) == 7
    v, pid = emb.pairwise()
    assert v.shape[0] == 40 and len(set(pid)) == 7
    ds = from_embeddings(emb)
    tr, va = split_prompts(ds.n_prompts, 0.3, 0)
    rows = store.rows.read(res.dataset_hash, ["prompt"]).column("prompt").to_pylist()
    by_item = {}
    order = np.lexsort((emb.response_index, emb.prompt_id))  # items as from_embeddings arranges them
    for flat, row in enumerate(order):
        by_item[flat] = rows[row]
    dc = DataConfig()
    texts = [{by_item[i] for i in np.concatenate([p.a, p.b])}
             for p in (make_training_pairs(ds, dc, tr), make_training_pairs(ds, dc, va, 1000))]
    assert texts[0] and texts[1] and not texts[0] & texts[1]


def test_export_carries_texts_unless_asked_not_to(tmp_path):
    import pyarrow.parquet as pq

    from embrm.store import export

    store = _multi_store(tmp_path / "store", p=5, k=3)
    t = pq.read_table(export(store, "synthetic-model", "synthetic-data", tmp_path / "x.parquet"))
    assert t.column("prompt").to_pylist()[:4] == ["p0", "p0", "p0", "p1"]
    assert t.column("response").to_pylist()[:2] == ["r0", "r1"] and t.num_rows == 15
    emb = store.load("synthetic-model", "synthetic-data")
    np.testing.assert_array_equal(np.stack(t.column("vector").to_numpy(zero_copy_only=False)), emb.vectors)
    t = pq.read_table(export(store, "synthetic-model", "synthetic-data", tmp_path / "y.parquet", texts=False))
    assert "prompt" not in t.column_names and "vector" in t.column_names
