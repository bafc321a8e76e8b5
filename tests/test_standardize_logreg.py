"""Standardised features and the exact logistic regression, against plain computations."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy.optimize import minimize

from embrm.cli import main as cli
from embrm.errors import EmbrmError
from embrm.rm import TrainConfig, build_pairs, split_prompts, train
from embrm.rm.experiment import DataConfig, eval_from_store, score_from_store, train_from_store
from embrm.rm.logreg import LAMBDAS, LogisticProblem
from embrm.rm.pairs import Pairs
from embrm.rm.run import load_run
from embrm.rm.standardize import FILE as STATS

from conftest import store_entry


def _scaled(p: int = 120, k: int = 4, d: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Items whose dimensions differ in scale by 10^4, and a linear reward of the unscaled ones."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((p * k, d))
    scale = np.logspace(-2, 2, d)
    return (z * scale + 3.0).astype(np.float32), (z @ rng.standard_normal(d)).reshape(p, k)


def _plain_log_loss(w: np.ndarray, f: np.ndarray, y: np.ndarray, lam: float, intercept: bool = False
                    ) -> tuple[float, np.ndarray]:
    """The textbook objective mean log-loss + lambda/2 |w|^2 (intercept last, unpenalised) and its gradient."""
    b = w[-1] if intercept else 0.0
    v = w[:-1] if intercept else w
    z = f @ v + b
    loss = np.mean(np.logaddexp(0, z) - y * z) + lam / 2 * v @ v
    r = (1 / (1 + np.exp(-z)) - y) / len(y)
    g = f.T @ r + lam * v
    return loss, np.concatenate([g, [r.sum()]]) if intercept else g


def _reference(f: np.ndarray, y: np.ndarray, lam: float, intercept: bool = False) -> np.ndarray:
    res = minimize(_plain_log_loss, np.zeros(f.shape[1] + intercept), args=(f, y, lam, intercept), jac=True,
                   method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-16, "maxiter": 20000, "maxcor": 30})
    return res.x


@pytest.mark.parametrize("intercept", [False, True])
@pytest.mark.parametrize("n, d", [(300, 10), (30, 50)])  # more rows than dimensions, and fewer
def test_logreg_reaches_first_order_optimality_and_equals_a_plain_solver(intercept, n, d):
    rng = np.random.default_rng(1)
    f = rng.standard_normal((n, d)) * np.linspace(0.5, 3, d)
    y = (rng.random(n) < 1 / (1 + np.exp(-(f @ rng.standard_normal(d) * 0.5 + 0.7 * intercept)))).astype(float)
    for lam in (1e-3, 0.1, 3.0):
        w, _ = LogisticProblem(torch.from_numpy(f), torch.from_numpy(y), intercept=intercept).solve(lam)
        w = w.numpy()
        _, g = _plain_log_loss(w, f, y, lam, intercept)
        assert np.linalg.norm(g) < 1e-6, (lam, np.linalg.norm(g))
        np.testing.assert_allclose(w, _reference(f, y, lam, intercept), atol=2e-5, rtol=1e-4)
    with pytest.raises(EmbrmError, match="must be positive"):
        LogisticProblem(torch.from_numpy(f), torch.from_numpy(y)).solve(0.0)


def test_logreg_chooses_lambda_on_validation_and_refits_on_everything():
    x, r = _scaled()
    tr, va = split_prompts(len(r), 0.25, 0)
    tp = build_pairs(r, tr, 4, "within", "random", 2.0, None, 0)
    vp = build_pairs(r, va, 4, "within", "random", 2.0, None, 1)
    model = train(x, tp, vp, TrainConfig(method="logreg"))
    assert model.config.standardize is True and model.net.hidden == () and not model.net.has_bias
    z = (x - x[np.unique(np.r_[tp.a, tp.b])].mean(0)) / x[np.unique(np.r_[tp.a, tp.b])].std(0)
    diff = lambda p: z[p.a] - z[p.b]  # noqa: E731
    path = {row["l2"]: row["val_loss"] for row in model.log.l2_path}
    assert sorted(path) == sorted(LAMBDAS)
    lam = min(path, key=path.get)
    assert model.config.l2 == lam
    # each lambda's validation loss: the plain fit on the training pairs, scored on validation pairs
    for check in (lam, LAMBDAS[0], LAMBDAS[-1]):
        w = _reference(diff(tp), tp.y, check)
        s = diff(vp) @ w
        assert path[check] == pytest.approx(np.mean(np.logaddexp(0, s) - vp.y * s), abs=1e-6)
    # the saved model: refitted on training + validation pairs at the chosen lambda
    both = Pairs(np.r_[tp.a, vp.a], np.r_[tp.b, vp.b], np.r_[tp.y, vp.y], np.r_[tp.prompt, vp.prompt])
    want = _reference(diff(both), both.y, lam)
    np.testing.assert_allclose(model.score(x)[0], z @ want, atol=1e-4)
    np.testing.assert_allclose(model.validation_model.score(x)[0], z @ _reference(diff(tp), tp.y, lam), atol=1e-4)
    # an ensemble: members spread as bootstrap fits do, centred on the exact fit
    ens = train(x, tp, vp, TrainConfig(method="logreg", ensemble=3, l2=lam))
    s = ens.score(x)
    assert ens.config.bootstrap and not np.allclose(s[0], s[1], atol=1e-2)
    np.testing.assert_allclose(s.mean(0), z @ want, atol=1e-4)


def _plant(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Dimension 0 a thousand times larger, on ``rows`` only."""
    x = x.copy()
    x[rows, 0] *= 1000
    return x


@pytest.mark.parametrize("method", ["bt", "clf", "linear", "lgbm", "logreg", "logreg-clf"])
def test_standardisation_statistics_come_from_training_items_only(method):
    x, r = _scaled(p=60)
    tr, va = split_prompts(len(r), 0.25, 0)
    tp = build_pairs(r, tr, 3, "within", "random", -1, None, 0)
    vp = build_pairs(r, va, 3, "within", "random", -1, None, 1)
    items = np.unique(np.r_[tp.a, tp.b])
    held = np.setdiff1d(np.arange(len(x)), items)  # validation and never-paired items
    xp = _plant(x, held)
    cfg = TrainConfig(method=method, standardize=True, hidden=(8,), max_epochs=2, lgbm_rounds=5)
    model = train(xp, tp, vp, cfg)
    np.testing.assert_allclose(model.standardizer.mean, x[items].mean(0), rtol=1e-5)
    np.testing.assert_allclose(model.standardizer.std, x[items].std(0), rtol=1e-5)
    assert model.config.standardize is True
    assert train(xp, tp, vp, TrainConfig(method=method, standardize=False, hidden=(8,), max_epochs=2,
                                         lgbm_rounds=5)).standardizer is None


def test_active_learning_sees_the_standardised_features_and_a_warm_start_keeps_its_statistics():
    """Selection's penultimate features are those the net was trained on: for a linear
    model, the standardised embedding, so features @ last layer are the model's scores.
    A warm start (``init``) continues on the statistics of the model it starts from."""
    from embrm.rm.active import item_features

    x, r = _scaled(p=60)
    tr, va = split_prompts(len(r), 0.25, 0)
    tp = build_pairs(r, tr, 3, "within", "random", -1, None, 0)
    vp = build_pairs(r, va, 3, "within", "random", -1, None, 1)
    for method in ("linear", "logreg"):
        model = train(x, tp, vp, TrainConfig(method=method, standardize=True, max_epochs=2))
        f, w = item_features(model, x)
        np.testing.assert_allclose(f[0], (x - model.standardizer.mean) / model.standardizer.std, rtol=1e-5,
                                   atol=1e-5)
        np.testing.assert_allclose(np.einsum("mnf,mf->mn", f, w), model.score(x), rtol=1e-4, atol=1e-4)
    first = train(x, tp, vp, TrainConfig(method="linear", standardize=True, max_epochs=2))
    more = build_pairs(r, tr, 6, "within", "random", -1, None, 2)  # another, larger training set
    again = train(x, more, vp, TrainConfig(method="linear", standardize=True, max_epochs=2), init=first)
    assert again.standardizer is first.standardizer and again.config.standardize is True


def _store(path, x: np.ndarray, r: np.ndarray):
    return store_entry(path, x, r, "scaled-model", "scaled-data")


def test_statistics_round_trip_through_run_directory_score_and_eval(tmp_path):
    import pyarrow.parquet as pq

    x, r = _scaled(p=60, k=4)
    store = _store(tmp_path / "store", x, r)
    out = tmp_path / "run"
    model, metrics = train_from_store(store, "scaled-model", "scaled-data",
                                      TrainConfig(method="linear", ensemble=2, standardize=True, max_epochs=5),
                                      DataConfig(), out=out, ns=[1, 2, 4])
    assert (out / STATS).exists()
    loaded, cfg = load_run(out)
    np.testing.assert_array_equal(loaded.standardizer.mean, model.standardizer.mean)
    np.testing.assert_array_equal(loaded.standardizer.std, model.standardizer.std)
    # a plain computation of the linear members on standardised rows
    w = loaded.net.weights[0].detach().numpy()[:, :, 0]
    want = ((x - model.standardizer.mean) / model.standardizer.std) @ w.T
    np.testing.assert_allclose(loaded.score(x), want.T, rtol=1e-4, atol=1e-4)
    t = pq.read_table(score_from_store(out, store, "scaled-data", tmp_path / "s.parquet"))
    np.testing.assert_allclose(np.stack(t.column("member_scores").to_numpy(zero_copy_only=False)), want,
                               rtol=1e-4, atol=1e-4)
    ev = eval_from_store(out, store, "scaled-data", [1, 2, 4])
    assert ev["aggregations"]["mean"]["bon"] == pytest.approx(metrics["aggregations"]["mean"]["bon"])
    # a run trained again into the same directory without standardisation leaves no statistics behind
    train_from_store(store, "scaled-model", "scaled-data", TrainConfig(method="linear", standardize=False,
                                                                       max_epochs=2), DataConfig(), out=out, ns=[2])
    assert not (out / STATS).exists() and load_run(out)[0].standardizer is None


def test_a_run_from_before_standardisation_loads_and_scores_raw_inputs(tmp_path):
    """Format 1: no statistics file, no standardize or l2 in its config."""
    x, r = _scaled(p=30, k=4)
    store = _store(tmp_path / "store", x, r)
    out = tmp_path / "old"
    train_from_store(store, "scaled-model", "scaled-data", TrainConfig(method="bt", hidden=(8,), max_epochs=2,
                                                                       standardize=False), DataConfig(), out=out,
                     ns=[2])
    cfg = json.loads((out / "config.json").read_text())
    cfg["run_format"] = 1
    for key in ("standardize", "l2"):
        del cfg["train"][key]
    for key in ("val_pair_loss", "l2_path"):
        del cfg["log"][key]
    (out / "config.json").write_text(json.dumps(cfg))
    old, _ = load_run(out)
    assert old.standardizer is None
    with torch.no_grad():
        want = old.net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(old.score(x), want, rtol=1e-6)
    assert eval_from_store(out, store, "scaled-data", [2])["split"] == "validation"


def test_cli_logreg_standardised_train_score_eval(tmp_path):
    x, r = _scaled(p=80, k=4)
    _store(tmp_path / "store", x, r)
    run = CliRunner()
    common = ["--store", str(tmp_path / "store")]
    res = run.invoke(cli, ["train", "--model-key", "scaled-model", "--dataset-key", "scaled-data", "--method",
                           "logreg", "--ensemble", "2", "--bon", "1,2,4", "--out", str(tmp_path / "run"), *common])
    assert res.exit_code == 0, res.output
    assert "trained logreg x2 standardised" in res.output and "from the fit before the refit" in res.output
    assert (tmp_path / "run" / STATS).exists()
    res = run.invoke(cli, ["eval", str(tmp_path / "run"), "--dataset-key", "scaled-data", "--bon", "1,4", *common])
    assert res.exit_code == 0 and "refitted-on validation prompts" in res.output
    res = run.invoke(cli, ["score", str(tmp_path / "run"), "--dataset-key", "scaled-data", "--out",
                           str(tmp_path / "s.parquet"), *common])
    assert res.exit_code == 0, res.output
    res = run.invoke(cli, ["train", "--model-key", "scaled-model", "--dataset-key", "scaled-data", "--method",
                           "logreg", "--l2", "0", *common])
    assert res.exit_code == 2 and "error:" in res.output
