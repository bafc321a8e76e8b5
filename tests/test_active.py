"""Active reward modeling: selection rules against plain computations (autograd Hessians,
plain and exhaustive greedy), candidate pools, the two-prompt pair file, and the
select-label-train round trip through the CLI on real stores."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_store import _rows, _write

from embrm.cli import main as cli
from embrm.errors import EmbrmError
from embrm.rm.active import fisher_vectors, greedy_logdet, information_logdet, ridge_lambda, select
from embrm.rm.models import EnsembleMLP
from embrm.rm.pools import candidate_pool, cross_pairs, stored_pairs, within_pairs
from embrm.rm.trainer import RewardModel, TrainConfig
from embrm.store import item_key, open_store

from servers import Server


def _model(dim: int, hidden: tuple[int, ...], members: int = 1, seed: int = 0) -> RewardModel:
    method = "linear" if not hidden else "bt"
    net = EnsembleMLP(members, dim, hidden, seed=seed, bias=bool(hidden))
    return RewardModel(TrainConfig(method=method, ensemble=members, hidden=hidden), dim, net=net.eval())


def _plain_greedy(u: np.ndarray, k: int, lam: np.ndarray, prior: np.ndarray | None = None) -> list[int]:
    """Greedy by the book: after every pick, every candidate's log-det gain from scratch."""
    m_, c, f = u.shape
    a = [lam[m] * np.eye(f) + (prior[m].T.astype(float) @ prior[m] if prior is not None else 0) for m in range(m_)]
    out: list[int] = []
    for _ in range(k):
        gain = np.zeros(c)
        for m in range(m_):
            base = np.linalg.slogdet(a[m])[1]
            gain += [np.linalg.slogdet(a[m] + np.outer(u[m, i], u[m, i]))[1] - base for i in range(c)]
        gain[out] = -np.inf
        i = int(np.argmax(gain))
        out.append(i)
        for m in range(m_):
            a[m] = a[m] + np.outer(u[m, i], u[m, i])
    return out


# ------------------------------------------------------------------ Fisher information
@pytest.mark.parametrize("hidden", [(), (7,), (9, 5)])
def test_fisher_of_a_pair_is_the_autograd_hessian_of_the_bt_loss(hidden):
    """p(1-p) (f_a - f_b)(f_a - f_b)^T equals the Hessian of the Bradley-Terry negative
    log-likelihood in the last layer's weights, computed by autograd through a forward
    pass written out here, for either label and every member."""
    torch.manual_seed(0)
    d = 6
    model = _model(d, hidden, members=2, seed=3)
    with torch.no_grad():  # a last layer large enough that p is far from 1/2
        model.net.weights[-1].mul_(4)
    x = np.random.default_rng(1).standard_normal((5, d)).astype(np.float32)
    a, b = np.array([0, 3, 1]), np.array([2, 4, 0])
    u, p = fisher_vectors(model, x, a, b)
    for m in range(2):
        ws = [w[m].detach().double() for w in model.net.weights]
        bs = [bb[m, 0].detach().double() for bb in model.net.biases]

        def reward(xi: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
            h = xi
            for w, bb in zip(ws[:-1], bs[:-1]):
                h = torch.relu(h @ w + bb)
            return h @ last + bs[-1][0]

        xt = torch.from_numpy(x).double()
        for c in range(len(a)):
            for y in (0.0, 1.0):
                def nll(last: torch.Tensor) -> torch.Tensor:
                    d_ = reward(xt[a[c]], last) - reward(xt[b[c]], last)
                    return torch.nn.functional.binary_cross_entropy_with_logits(d_, torch.tensor(y, dtype=d_.dtype))

                hess = torch.autograd.functional.hessian(nll, ws[-1][:, 0].clone())
                np.testing.assert_allclose(np.outer(u[m, c], u[m, c]), hess.numpy(), rtol=1e-4, atol=1e-6)
            s = reward(xt[a[c]], ws[-1][:, 0]) - reward(xt[b[c]], ws[-1][:, 0])
            assert p[m, c] == pytest.approx(torch.sigmoid(s).item(), rel=1e-5)
    if not hidden:  # a linear model's features are the embedding itself
        z = x[a] - x[b]
        np.testing.assert_allclose(u[0], z * np.sqrt(p[0] * (1 - p[0]))[:, None], rtol=1e-5)


# ------------------------------------------------------------------------- greedy D-opt
def _pool(c: int, f: int, members: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((members, c, f)) * rng.gamma(2.0, 1.0, (members, c, 1))).astype(np.float32)


@pytest.mark.parametrize("members,tiers,with_prior", [(1, (8, 40), False), (2, (5, 20, 60), True), (1, (4,), True),
                                                      (1, (1024,), False)])
def test_lazy_greedy_makes_the_plain_greedy_choices(members, tiers, with_prior):
    u = _pool(150, 6, members)
    prior = _pool(9, 6, members, seed=5) if with_prior else None
    lam = ridge_lambda(u, 0.5)
    got = greedy_logdet(u, 25, lam, prior, tiers=tiers)
    assert got.tolist() == _plain_greedy(u, 25, lam, prior)


def test_greedy_logdet_beats_top_k_and_random_batches():
    rng = np.random.default_rng(0)
    for _ in range(5):
        u = rng.standard_normal((1, 60, 5)).astype(np.float32)
        strong = 3 * np.sqrt(5) * u[0, 0] / np.linalg.norm(u[0, 0])
        u[0, :8] = strong * rng.uniform(0.97, 1.0, (8, 1))  # near-duplicates of one strong pair
        lam = ridge_lambda(u, 1.0)
        k = 6
        chosen = greedy_logdet(u, k, lam)
        greedy = information_logdet(u[:, chosen], lam)
        top = np.argsort(-np.einsum("mcf,mcf->c", u, u))[:k]  # each pair's information alone, k best
        assert (top < 8).sum() >= 5 and (chosen < 8).sum() <= 2  # top-k takes the duplicates, greedy one or two
        assert greedy > information_logdet(u[:, top], lam) + 0.5
        for _ in range(50):
            assert greedy >= information_logdet(u[:, rng.choice(60, k, replace=False)], lam)


def test_first_pick_is_the_brute_force_best_and_greedy_is_within_1_minus_1_over_e():
    for trial in range(4):
        u = _pool(12, 4, members=2, seed=10 + trial)
        prior = _pool(3, 4, members=2, seed=20 + trial)
        lam = ridge_lambda(u, 1.0)
        singles = [information_logdet(u[:, [i]], lam, prior) for i in range(12)]
        got = greedy_logdet(u, 3, lam, prior)
        assert got[0] == int(np.argmax(singles))
        best = max(information_logdet(u[:, list(s)], lam, prior) for s in itertools.combinations(range(12), 3))
        assert information_logdet(u[:, got], lam, prior) >= (1 - 1 / np.e) * best


def test_greedy_logdet_bad_input():
    u = _pool(5, 3)
    with pytest.raises(EmbrmError, match="cannot choose 6 pairs from 5"):
        greedy_logdet(u, 6, ridge_lambda(u, 1.0))


# ----------------------------------------------------------------------------- rules
def _line_pool() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items on two axes: pairs along e1 differ by 3, pairs along e2 by 1."""
    x = np.zeros((8, 2), np.float32)
    x[:4, 0] = [0, 3, 6, 9]
    x[4:, 1] = [0, 1, 2, 3]
    return x, np.array([0, 1, 2, 4, 5, 6]), np.array([1, 2, 3, 5, 6, 7])


def test_dopt_past_counts_the_labelled_pairs_and_never_picks_them():
    x, a, b = _line_pool()
    model = _model(2, ())
    with torch.no_grad():
        model.net.weights[0].zero_()  # p = 1/2 everywhere: the information is z z^T / 4
    assert select("dopt", model, x, a, b, 1)[0] in (0, 1, 2)  # the strong direction first
    la, lb = np.array([1, 0]), np.array([0, 1])  # pair (0, 1), labelled, in both orders
    assert select("dopt-past", model, x, a, b, 1, la, lb)[0] in (3, 4, 5)  # e1 is labelled already
    labelled_more = (np.array([2, 1]), np.array([1, 2]))  # e1 well covered now
    assert select("dopt-past", model, x, a, b, 1, *labelled_more)[0] in (3, 4, 5)
    assert select("dopt", model, x, a, b, 1, *labelled_more)[0] in (0, 2)  # dopt ignores what is labelled
    for rule in ("dopt-past", "dopt", "random", "uncertainty"):
        got = select(rule, model, x, a, b, 4, np.array([0, 2]), np.array([1, 1]))
        assert sorted(got.tolist()) == [2, 3, 4, 5], rule  # every unlabelled pair, no labelled one
    with pytest.raises(EmbrmError, match="budget of 5 pairs is larger than the pool's 4 unlabelled"):
        select("dopt-past", model, x, a, b, 5, np.array([0, 2]), np.array([1, 1]))


def test_uncertainty_and_disagreement_against_plain_scores():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 5)).astype(np.float32)
    model = _model(5, (8,), members=3)
    a, b = rng.integers(0, 30, 40), rng.integers(0, 30, 40)
    ok = a != b
    a, b = a[ok], b[ok]
    s = model.score(x)
    d = s[:, a] - s[:, b]
    got = select("uncertainty", model, x, a, b, 5)
    assert set(got.tolist()) == set(np.argsort(np.abs(d.mean(0)))[:5].tolist())
    got = select("disagreement", model, x, a, b, 5)
    assert set(got.tolist()) == set(np.argsort(-d.std(0))[:5].tolist())
    with pytest.raises(EmbrmError, match="disagreement needs an ensemble"):
        select("disagreement", _model(5, (8,)), x, a, b, 5)
    with pytest.raises(EmbrmError, match="unknown selection rule"):
        select("best", model, x, a, b, 5)


# ----------------------------------------------------------------------------- pools
def test_candidate_pools():
    item_prompt = np.repeat(np.arange(6), 4)
    a, b = within_pairs(item_prompt, np.array([1, 4]))
    assert len(a) == 2 * 6 and (item_prompt[a] == item_prompt[b]).all() and set(item_prompt[a]) == {1, 4}
    assert len({(min(i, j), max(i, j)) for i, j in zip(a, b)}) == 12
    rng = np.random.default_rng(0)
    a, b = cross_pairs(item_prompt, np.arange(6), 50, rng)
    assert len(a) == 50 and (item_prompt[a] != item_prompt[b]).all()
    assert len({(min(i, j), max(i, j)) for i, j in zip(a, b)}) == 50
    a, b = cross_pairs(item_prompt, np.array([0, 1]), 1000, rng)  # fewer exist: all 16 of them
    assert len(a) == 16 and (item_prompt[a] != item_prompt[b]).all()
    a, b = candidate_pool(item_prompt, np.arange(6), "within", 10, rng)
    assert len(a) == 10 and (item_prompt[a] == item_prompt[b]).all()
    a, b, y = stored_pairs(np.arange(0, 200, 2), np.arange(1, 200, 2), rng)
    assert 30 < y.sum() < 70 and ((a % 2 == 0) == (y == 1)).all()  # both orders, label where a is chosen
    with pytest.raises(EmbrmError, match="cross-prompt pairs need at least 2 prompts"):
        cross_pairs(item_prompt, np.array([3]), 5, rng)


# --------------------------------------------------------------- stores and the CLI
def _multi_file(path: Path, prompts: int = 12, k: int = 4) -> tuple[Path, dict[tuple[str, str], float]]:
    """A multi-response file with golden rewards: a kind reply scores higher."""
    rng = np.random.default_rng(0)
    recs, gold = [], {}
    words = ["good", "kind", "bad", "rude", "fine", "awful"]
    for i in range(prompts):
        resp = [f" {words[(i + j) % 6]} answer {j}" for j in range(k)]
        rw = [float(("good" in r) + ("kind" in r) - ("bad" in r) - ("awful" in r) + 0.1 * rng.standard_normal())
              for r in resp]
        recs.append({"prompt": f"Question {i}?", "responses": resp, "rewards": rw})
        gold.update({(f"Question {i}?", r): w for r, w in zip(resp, rw)})
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path, gold


def _invoke(args: list[str]) -> str:
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    return res.output


def _pool_and_run(tmp_path: Path, tiny_model: Path) -> tuple[str, dict, Path]:
    """A pool extracted with the tiny model and a reward model trained on it."""
    from embrm.extractor import extract

    from conftest import extract_config

    data, gold = _multi_file(tmp_path / "pool.jsonl")
    r = extract(extract_config(data, tiny_model, tmp_path / "store", dtype="float32", quiet=True))
    _invoke(["train", "--model-key", r.model_hash[:12], "--dataset-key", "pool", "--hidden", "16", "--ensemble", "2",
             "--epochs", "3", "--bon", "1,2,4", "--out", str(tmp_path / "run"), "--store", str(tmp_path / "store")])
    return r.model_hash, gold, tmp_path / "run"


def test_select_label_extract_train_round_trip(tmp_path, tiny_model):
    """Select with the CLI, label the file as annotators would, and the filled file extracts
    with every item cached (no model loaded) and trains; a second round excludes the first."""
    model_hash, gold, run = _pool_and_run(tmp_path, tiny_model)
    store = ["--store", str(tmp_path / "store")]
    sel = ["active", "select", "--rm", str(run), "--model-key", model_hash[:12], "--dataset-key", "pool"]
    out = _invoke([*sel, "--budget", "14", "--rule", "dopt", "--pairs", "cross", "--out", str(tmp_path / "r1.jsonl"),
                   *store])
    assert "selected 14" in out and "cross-prompt pairs" in out
    recs = [json.loads(line) for line in (tmp_path / "r1.jsonl").read_text().splitlines()]
    assert len(recs) == 14
    assert list(recs[0]) == ["prompt_a", "response_a", "prompt_b", "response_b", "winner", "key_a", "key_b"]
    for r in recs:
        assert r["winner"] == "" and r["prompt_a"] != r["prompt_b"]
        assert r["key_a"] == item_key(r["prompt_a"], r["response_a"]) and (r["prompt_a"], r["response_a"]) in gold
        r["winner"] = "a" if gold[(r["prompt_a"], r["response_a"])] >= gold[(r["prompt_b"], r["response_b"])] else "b"
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = _invoke(["extract", "--dataset", str(labelled), "--model", str(tiny_model), "--dtype", "float32", "--quiet",
                   *store])
    assert "(pairwise, 28 rows)" in out and "computed 0   cached 28" in out and "model not loaded" in out
    out = _invoke(["train", "--model-key", model_hash[:12], "--dataset-key", "labelled", "--hidden", "16",
                   "--epochs", "3", "--val-frac", "0.3", "--out", str(tmp_path / "run2"), *store])
    assert "pair-acc" in out
    emb = open_store(tmp_path / "store").load(model_hash, "labelled")
    rows = emb.pair_rows()
    chosen = [(recs[i]["prompt_a"], recs[i]["response_a"]) if recs[i]["winner"] == "a"
              else (recs[i]["prompt_b"], recs[i]["response_b"]) for i in range(14)]
    assert sorted(emb.item_key[i] for i in rows[:, 0]) == sorted(item_key(*c) for c in chosen)
    assert (emb.prompt_id[rows[:, 0]] != emb.prompt_id[rows[:, 1]]).all()  # two prompts a pair
    out = _invoke(["eval", str(tmp_path / "run2"), "--dataset-key", "labelled", *store])
    assert "(validation prompts)" in out
    out = _invoke([*sel, "--budget", "10", "--rule", "dopt-past", "--pairs", "cross", "--exclude", str(labelled),
                   "--out", str(tmp_path / "r2.jsonl"), *store])
    assert "14 labelled pairs excluded (14 found in the pool)" in out
    again = [json.loads(line) for line in (tmp_path / "r2.jsonl").read_text().splitlines()]
    first = {frozenset((r["key_a"], r["key_b"])) for r in recs}
    assert len(again) == 10 and not first & {frozenset((r["key_a"], r["key_b"])) for r in again}


def test_two_prompt_pairs_split_by_either_prompt(tmp_path, tiny_model):
    """A cross-prompt pair is trained on only when both its prompts are training prompts,
    and is held out when either is held out."""
    from embrm.extractor import extract
    from embrm.rm.experiment import DataConfig, from_embeddings, make_training_pairs
    from embrm.rm.pairs import split_prompts

    from conftest import extract_config

    recs = [{"prompt_a": f"Q{i % 9}?", "response_a": f" yes {i}", "prompt_b": f"Q{(i * 5 + 1) % 9}?",
             "response_b": f" no {i}", "winner": "ab"[i % 2]} for i in range(60)]
    recs[0]["winner"] = ""
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(EmbrmError, match="record 0: winner must be 'a' or 'b'"):
        extract(extract_config(data, tiny_model, tmp_path / "store", dtype="float32", quiet=True))
    res = extract(extract_config(data, tiny_model, tmp_path / "store", dtype="float32", quiet=True,
                                 skip_bad_rows=True))
    assert (res.kind, res.rows, res.skipped) == ("pairwise", 118, 1)
    emb = open_store(tmp_path / "store").load(res.model_hash, res.dataset_hash)
    ds = from_embeddings(emb)
    assert ds.n_prompts == 9 and ds.pairs.prompt_b is not None
    texts = {k: i for i, k in enumerate(emb.item_key)}
    for r in recs[1:]:  # the winner is the chosen row, whichever side it was on
        win = "a" if r["winner"] == "a" else "b"
        assert emb.role[texts[item_key(r[f"prompt_{win}"], r[f"response_{win}"])]] == "chosen"
    tr, va = split_prompts(ds.n_prompts, 0.3, 0)
    dc = DataConfig()
    train_p, held = make_training_pairs(ds, dc, tr), make_training_pairs(ds, dc, va, 1000, held_out=True)
    assert len(train_p) and len(held) and len(train_p) + len(held) == 59
    assert np.isin(train_p.prompt, tr).all() and np.isin(train_p.prompt_b, tr).all()
    assert (np.isin(held.prompt, va) | np.isin(held.prompt_b, va)).all()
    assert (~np.isin(held.prompt, va) | ~np.isin(held.prompt_b, va)).any()  # some held-out pairs are mixed
    item_of = ds.item_prompt
    assert (item_of[train_p.a] == train_p.prompt).all() and (item_of[train_p.b] == train_p.prompt_b).all()


def _synthetic_entry(store, model_hash: str, dataset_hash: str, texts: bool = True, p: int = 10, k: int = 4,
                     kind: str = "multi") -> None:
    rng = np.random.default_rng(0)
    rows = _rows([f"prompt {i}" for i in range(p)], k, rng.standard_normal((p, k)), kind=kind)
    if not texts:
        for r in rows:
            r["prompt"] = r["response"] = None
    vecs = {r["item_key"]: rng.standard_normal(8).astype(np.float32) for r in rows}
    _write(store, model_hash, dataset_hash, rows, lambda key, layer: vecs[key], kind=kind,
           name=f"model-{model_hash[:2]}")


def test_select_bad_input_is_one_line_and_exit_2(tmp_path):
    store = open_store(tmp_path / "store", create=True)
    _synthetic_entry(store, "a" * 64, "1" * 64)
    _synthetic_entry(store, "b" * 64, "2" * 64)
    _synthetic_entry(store, "a" * 64, "3" * 64, texts=False)
    s = ["--store", str(tmp_path / "store")]
    _invoke(["train", "--model-key", "model-aa", "--dataset-key", "data-1111", "--method", "linear", "--epochs", "2",
             "--bon", "1,2", "--out", str(tmp_path / "run"), *s])
    sel = ["active", "select", "--rm", str(tmp_path / "run"), "--out", str(tmp_path / "x.jsonl"), *s]
    r = CliRunner()
    res = r.invoke(cli, [*sel, "--model-key", "model-aa", "--dataset-key", "data-1111", "--budget", "61"])
    assert res.output.startswith("error: a budget of 61 pairs is larger than the pool's 60 unlabelled")
    for args, msg in [(["--model-key", "model-bb", "--dataset-key", "data-2222", "--budget", "3"],
                       "error: the reward model in"),
                      (["--model-key", "model-aa", "--dataset-key", "data-3333", "--budget", "3"],
                       "error: the pool data-3333 has no texts"),
                      (["--model-key", "model-aa", "--dataset-key", "data-1111", "--budget", "3",
                        "--rule", "disagreement"], "error: disagreement needs an ensemble")]:
        res = r.invoke(cli, [*sel, *args])
        assert res.exit_code == 2 and res.output.startswith(msg) and len(res.output.strip().splitlines()) == 1, \
            res.output
    assert not (tmp_path / "x.jsonl").exists()
    res = r.invoke(cli, [*sel, "--model-key", "model-aa", "--dataset-key", "data-1111", "--budget", "3",
                         "--out", str(tmp_path / "x.csv")])
    assert res.exit_code == 2 and "use a .jsonl or .parquet" in res.output
    cold = ["active", "select", "--model-key", "model-aa", "--dataset-key", "data-1111", "--budget", "5",
            "--out", str(tmp_path / "cold.jsonl"), *s]  # no reward model yet: random is the cold start
    res = r.invoke(cli, [*cold, "--rule", "dopt"])
    assert res.exit_code == 2 and res.output.startswith("error: rule dopt needs a trained reward model")
    _invoke([*cold, "--rule", "random"])
    assert len((tmp_path / "cold.jsonl").read_text().splitlines()) == 5
    before = (tmp_path / "cold.jsonl").read_text()  # annotators may be filling it: never replaced unasked
    (tmp_path / "multi.jsonl").write_text('{"prompt": "p", "responses": ["a", "b"]}\n')
    (tmp_path / "dir.jsonl").mkdir()
    pool = ["--model-key", "model-aa", "--dataset-key", "data-1111", "--budget", "3", *s]
    c2 = ["--out", str(tmp_path / "c2.jsonl")]
    for args, msg in [([*cold, "--rule", "random"], "exists; pass --force"),
                      (["active", "select", *pool, "--rule", "random", "--out", str(tmp_path / "dir.jsonl")],
                       "is a directory"),
                      (["active", "select", *pool, "--rule", "random", *c2, "--exclude", str(tmp_path / "multi.jsonl")],
                       "--exclude takes files of labelled pairs"),
                      (["active", "select", *pool, "--rule", "random", *c2, "--dataset-key", "nope"], "error: "),
                      (["active", "select", *pool, "--rm", str(tmp_path), *c2], "is not an embrm run directory")]:
        res = r.invoke(cli, args)
        assert res.exit_code == 2 and msg in res.output and res.output.count("\n") == 1, (args, res.output)
    assert (tmp_path / "cold.jsonl").read_text() == before and not (tmp_path / "c2.jsonl").exists()
    _invoke([*cold, "--rule", "random", "--seed", "1", "--force"])
    assert (tmp_path / "cold.jsonl").read_text() != before
    res = r.invoke(cli, ["extract", "--dataset", str(tmp_path / "cold.jsonl"), *s, "--quiet"])  # not labelled yet
    assert res.exit_code == 2 and "record 0: winner must be 'a' or 'b', got ''" in res.output, res.output
    assert res.output.count("\n") == 1


def test_select_reads_local_s3_and_http_stores_alike(tmp_path, s3, tiny_model):
    """The same selection from a local store, the same entry on S3, and through `embrm serve`."""
    local = tmp_path / "store"
    outputs = []
    for uri in (str(local), s3.uri):
        st = open_store(uri, create=True)
        _synthetic_entry(st, "a" * 64, "1" * 64, kind="pairwise", p=30, k=2)
    _invoke(["train", "--model-key", "model-aa", "--dataset-key", "data-1111", "--method", "linear", "--epochs", "2",
             "--out", str(tmp_path / "run"), "--store", str(local)])
    server = Server(tiny_model, local)
    try:
        for i, uri in enumerate((str(local), s3.uri, server.url)):
            out = tmp_path / f"sel{i}.jsonl"
            got = _invoke(["active", "select", "--rm", str(tmp_path / "run"), "--model-key", "model-aa",
                           "--dataset-key", "data-1111", "--budget", "8", "--rule", "dopt", "--out", str(out),
                           "--store", uri])
            assert "30 candidate stored pairs" in got
            outputs.append(out.read_text())
    finally:
        server.stop()
    assert outputs[0] == outputs[1] == outputs[2] and len(outputs[0].splitlines()) == 8
    assert '"prompt_a": "prompt ' in outputs[0]


def test_reproduce_active_on_simulated_and_labelled_pools(tmp_path):
    store = open_store(tmp_path / "store", create=True)
    _synthetic_entry(store, "a" * 64, "1" * 64, p=40, k=4)
    _synthetic_entry(store, "a" * 64, "2" * 64, p=60, k=2, kind="pairwise")
    s = ["--store", str(tmp_path / "store")]
    common = ["reproduce", "active", "--model-key", "model-aa", "--rounds", "2", "--per-round", "8", "--seeds", "2",
              "--rules", "random,dopt,disagreement", "--hidden", "8", "--members", "2", "--prompts-per-round", "6",
              "--candidates", "40", *s]
    out = _invoke([*common, "--dataset-key", "data-1111", "--pairs", "cross", "--annotation-quality", "1",
                   "--bon", "1,2,4", "--out", str(tmp_path / "sim")])
    assert "labels to reach random's final" in out
    for f in ("active.png", "active.md", "active.csv", "active.json"):
        assert (tmp_path / "sim" / f).exists()
    res = json.loads((tmp_path / "sim" / "active.json").read_text())
    assert len(res["rows"]) == 3 * 2 * 2 and {r["labels"] for r in res["rows"]} == {8, 16}
    assert res["metrics"] == ["bon@1", "bon@2", "bon@4", "spearman", "pair_acc"] and res["held_out_prompts"] == 8
    for seed in (0, 1):  # every rule starts from the same random batch
        first = [r["spearman"] for r in res["rows"] if r["seed"] == seed and r["round"] == 0]
        assert len(set(first)) == 1
    assert {r["rule"] for r in res["summary"]} == {"random", "dopt", "disagreement"}
    assert all(r["seeds"] == 2 and r["spearman_ci"] >= 0 for r in res["summary"])
    assert set(res["vs_random"]["rules"]) == {"dopt", "disagreement"}
    out = _invoke([*common, "--dataset-key", "data-2222", "--out", str(tmp_path / "lab")])
    res = json.loads((tmp_path / "lab" / "active.json").read_text())
    assert res["kind"] == "labelled pool" and res["metrics"] == ["pair_acc"] and res["primary"] == "pair_acc"
    assert all(0 <= r["pair_acc"] <= 1 for r in res["rows"])
    res = CliRunner().invoke(cli, [*common, "--dataset-key", "data-1111", "--members", "1",
                                   "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "disagreement rule needs an ensemble" in res.output


def test_warm_start_begins_from_the_given_model():
    from embrm.rm.pairs import Pairs
    from embrm.rm.trainer import train

    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 6)).astype(np.float32)
    p = Pairs(np.arange(25), np.arange(25, 50), np.ones(25, np.float32), np.zeros(25, int))
    first = train(x, p, p, TrainConfig(hidden=(8,), max_epochs=5, lr=1e-2))
    cfg = TrainConfig(hidden=(8,), max_epochs=1, lr=1e-12, seed=7)
    warm, cold = train(x, p, p, cfg, init=first), train(x, p, p, cfg)
    np.testing.assert_allclose(warm.score(x), first.score(x), atol=1e-5)
    assert not np.allclose(cold.score(x), first.score(x), atol=1e-3)
