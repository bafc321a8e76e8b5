"""Methods as plug-ins: the one registry of method names, and the documented ridge-regression
method going through train, score, serve, push/pull (as ``module:attr`` and as an
installed entry point), checked against a plain numpy computation."""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from embrm import methods, runformat
from embrm.cli import main as cli
from embrm.errors import EmbrmError

from conftest import ROOT, store_entry

DOC = ROOT / "docs" / "comparisons.md"


def plugin_source() -> str:
    """The example method exactly as docs/comparisons.md shows it (the first python block)."""
    return re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    """The docs' plug-in as a module, and a dist-info that installs it as an entry point."""
    d = tmp_path_factory.mktemp("plugin")
    (d / "ridge_plugin.py").write_text(plugin_source())
    info = d / "ridge_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ridge-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[embrm.methods]\nridge = ridge_plugin:RidgeBT\n")
    return d


@pytest.fixture(scope="module")
def trained(plugin_dir, tmp_path_factory):
    """A store with a multi-response entry and a ridge run trained on it (module:attr), pushed."""
    sys.path.insert(0, str(plugin_dir))
    d = tmp_path_factory.mktemp("ridge")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60 * 4, 8)).astype(np.float32)
    store_entry(d / "store", x, (x @ rng.standard_normal(8)).reshape(60, 4))
    res = CliRunner().invoke(cli, ["train", "--method", "ridge_plugin:RidgeBT", "--model-key", "synthetic-model",
                                   "--dataset-key", "synthetic-data", "--ensemble", "2", "--out", str(d / "run"),
                                   "--push", "ridge-pub", "--store", str(d / "store")])
    assert res.exit_code == 0, res.output
    yield d, x
    sys.path.remove(str(plugin_dir))


def _plain_ridge(d: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(weights, standardised rows) recomputed with numpy from the run's own training pairs."""
    from embrm.rm.experiment import DataConfig, from_embeddings, make_training_pairs
    from embrm.rm.pairs import split_prompts
    from embrm.store import open_store

    ds = from_embeddings(open_store(d / "store").load("synthetic-model", "synthetic-data"))
    train_p, _ = split_prompts(ds.n_prompts, 0.2, 0)
    tp = make_training_pairs(ds, DataConfig(), train_p)
    keep = x[np.unique(np.concatenate([tp.a, tp.b]))].astype(np.float64)
    z = (x - keep.mean(0)) / keep.std(0)
    dz = z[tp.a] - z[tp.b]
    w = np.linalg.solve(dz.T @ dz / len(dz) + np.eye(8), dz.T @ (2.0 * tp.y - 1) / len(dz))
    return w, z


def test_the_registry_is_the_only_list_of_method_names():
    """No module but embrm/methods.py writes out a list of three or more built-in method
    names (a tuple, list, set, dict or a comma-separated string); the CLI offers exactly
    the registry's names."""
    builtin = set(methods.builtin_names())
    offenders = []
    for p in [*(ROOT / "embrm").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]:
        if p == ROOT / "embrm" / "methods.py":
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            items: list[str] = []
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                items = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            elif isinstance(node, ast.Dict):
                items = [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                items = re.split(r"[,| ]+", node.value)
            if len(builtin & set(items)) >= 3:
                offenders.append(f"{p.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"method names written out outside embrm/methods.py: {offenders}"
    out = CliRunner().invoke(cli, ["train", "--help"]).output
    assert "[" + "|".join(methods.names()) + "|module:attr]" in out.replace("\n", "").replace(" ", "")
    res = CliRunner().invoke(cli, ["train", "--method", "nope", "--model-key", "m", "--dataset-key", "d"])
    assert res.exit_code == 2 and "unknown method 'nope'; use one of bt, clf" in res.output
    assert res.output.count("\n") == 1


def test_a_plugin_trains_scores_serves_and_is_pushed_and_pulled(trained, tmp_path):
    from embrm.rm.run import load_run
    from embrm.serve.rewards import RewardModels
    from embrm.store import open_store

    d, x = trained
    run = d / "run"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["method"] == "ridge" and cfg["train"]["standardize"] is True
    w, z = _plain_ridge(d, x)
    model, _ = load_run(run)
    saved = model.net.weights[0].detach().numpy()[:, :, 0]
    np.testing.assert_allclose(saved, np.tile(w, (2, 1)), rtol=1e-4, atol=1e-5)
    # embrm score: every row's mean reward is the plain z . w
    res = CliRunner().invoke(cli, ["score", str(run), "--dataset-key", "synthetic-data", "--out",
                                   str(tmp_path / "s.parquet"), "--store", str(d / "store")])
    assert res.exit_code == 0, res.output
    t = pq.read_table(tmp_path / "s.parquet").to_pydict()
    order = np.array(t["prompt_id"]) * 4 + np.array(t["response_index"])
    np.testing.assert_allclose(np.array(t["score_mean"]), (z @ w)[order], rtol=1e-4, atol=1e-4)
    # served from its directory and as the published run, the same rewards
    store = open_store(d / "store")
    rms = RewardModels(store, "m" * 64, (-1,), 8, dirs={"ridge": run})
    try:
        for name in ("ridge", "ridge-pub"):
            got = rms.scorer.submit(rms.get(name), x[:10]).result(timeout=30)
            np.testing.assert_allclose(got.mean(0), (z @ w)[:10], rtol=1e-4, atol=1e-4)
    finally:
        rms.close()
    # pulled back, the same files; a pulled copy with a wrong tensor shape is refused in one line
    res = CliRunner().invoke(cli, ["rm", "pull", "ridge-pub", "--out", str(tmp_path / "pulled"), "--store",
                                   str(d / "store")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "pulled" / "weights.safetensors").read_bytes() == (run / "weights.safetensors").read_bytes()
    files = runformat.read_files(tmp_path / "pulled")
    bad = json.loads(files["config.json"])
    bad["train"]["ensemble"] = 3
    with pytest.raises(EmbrmError, match=r"w0 of weights.safetensors is F32 \[2, 8, 1\]; the config implies F32 \[3,"):
        runformat.check_files({**files, "config.json": json.dumps(bad).encode()}, "upload")


def test_a_plugin_installed_as_an_entry_point_works_in_a_new_process(trained, plugin_dir, tmp_path):
    d, x = trained
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(ROOT)])}
    cmd = [sys.executable, "-m", "embrm.cli"]
    res = subprocess.run([*cmd, "train", "--method", "ridge", "--model-key", "synthetic-model", "--dataset-key",
                          "synthetic-data", "--out", str(tmp_path / "run2"), "--store", str(d / "store")],
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    w, _ = _plain_ridge(d, x)
    from embrm.rm.run import load_run

    model, cfg = load_run(tmp_path / "run2")
    assert cfg["train"]["method"] == "ridge"
    np.testing.assert_allclose(model.net.weights[0].detach().numpy()[0, :, 0], w, rtol=1e-4, atol=1e-5)
    # without the plug-in on the path, a ridge run is refused in one line, naming the way in
    env["PYTHONPATH"] = str(ROOT)
    res = subprocess.run([*cmd, "score", str(tmp_path / "run2"), "--dataset-key", "synthetic-data", "--out",
                          str(tmp_path / "s.parquet"), "--store", str(d / "store")],
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert 'train.method is "ridge"; expected one of bt' in res.stderr
    assert "entry point group embrm.methods" in res.stderr


def test_tune_as_a_method_trains_what_the_grid_chooses():
    """``--method tune`` (what ``reproduce compare --methods ...,tune`` runs): the grid on
    the given split, then the chosen setting; the model is the chosen method's."""
    from dataclasses import replace

    from embrm.rm.pairs import build_pairs, split_prompts
    from embrm.rm.trainer import TrainConfig, train
    from embrm.rm.tune import tune

    rng = np.random.default_rng(1)
    x = rng.standard_normal((60 * 4, 6)).astype(np.float32)
    r = (x @ rng.standard_normal(6)).reshape(60, 4)
    tr, va = split_prompts(60, 0.2, 0)
    tp = build_pairs(r, tr, 4, "within", "random", 1.0, None, 0)
    vp = build_pairs(r, va, 4, "within", "random", 1.0, None, 1)
    cfg = TrainConfig(method="tune", max_epochs=3, ensemble=2)
    model = train(x, tp, vp, cfg)
    chosen, results = tune(x, tp, vp, replace(cfg, method="bt", ensemble=1))
    assert model.config.method == chosen.method != "tune" and model.config.ensemble == 2
    assert (model.config.l2, model.config.lr, model.config.standardize) == (chosen.l2, chosen.lr, chosen.standardize)
    assert {g["method"] for g in results} == set(methods.tunable()) and "tune" not in methods.tunable()
