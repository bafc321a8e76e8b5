"""Reward models in use: served by a real `embrm serve` process on loopback in the shapes
RLHF and Best-of-N frameworks send, scoring new texts in one command, and shared through
the store. Served rewards are checked against `embrm score` on the same texts and against
a plain numpy forward pass of the run's weights."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from safetensors.numpy import load_file, save_file

from embrm.cli import main as cli
from embrm.client import RewardClient
from embrm.rm.metrics import AGGREGATIONS, aggregate
from embrm.store import item_key, open_store

from servers import Server, http

pytest.importorskip("fastapi")
PROMPTS = [f"Question number {i}: what do you think?" for i in range(24)]
TONES = [" Great, wonderful, thanks!", " It is fine.", " Bad. Awful.", " Yes, good and kind."]


def _multi(path: Path, prompts: list[str], tones: list[str]) -> Path:
    recs = [{"prompt": p, "responses": [f"{t} ({i})" for t in tones],
             "rewards": [float(len(t) % 7 - 3 + (i % 3)) for t in tones]} for i, p in enumerate(prompts)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model):
    """A store with an extracted multi-response entry and runs of every method trained on it."""
    d = tmp_path_factory.mktemp("rewards")
    data = _multi(d / "train.jsonl", PROMPTS, TONES)
    store = d / "store"
    r = CliRunner()
    res = r.invoke(cli, ["extract", "--dataset", str(data), "--model", str(tiny_model), "--dtype", "float32",
                         "--store", str(store), "--quiet"])
    assert res.exit_code == 0, res.output
    [entry] = open_store(store).entries()
    runs = {}
    for name, args in {"bt": ["--method", "bt", "--ensemble", "3", "--hidden", "16,8"],
                       "clf": ["--method", "clf", "--ensemble", "2", "--hidden", "8"],
                       "linear": ["--method", "linear", "--ensemble", "3"],
                       "lgbm": ["--method", "lgbm", "--ensemble", "2"],
                       "logreg": ["--method", "logreg", "--ensemble", "2"]}.items():  # standardised by default
        res = r.invoke(cli, ["train", "--model-key", entry.model_hash, "--dataset-key", "train", *args, "--epochs",
                             "3", "--out", str(d / "runs" / name), "--store", str(store)])
        assert res.exit_code == 0, res.output
        runs[name] = d / "runs" / name
    return {"dir": d, "store": store, "runs": runs, "model": tiny_model, "model_hash": entry.model_hash}


@pytest.fixture(scope="module")
def served(trained):
    args = [a for name, path in trained["runs"].items() for a in ("--rm", f"{name}={path}")]
    s = Server(trained["model"], trained["store"], *args)
    yield s
    s.stop()


def _scores_via_cli(trained, run: str, data: Path, out: Path) -> pa.Table:
    res = CliRunner().invoke(cli, ["score", str(trained["runs"][run]), "--dataset", str(data), "--store",
                                   str(trained["store"]), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    return pq.read_table(out)


def test_served_rewards_equal_embrm_score_for_every_route_method_and_aggregation(trained, served, tmp_path):
    prompts = ["A new question?", "Another one, unseen?", "Third!"]
    cands = [" Lovely, thank you.", " Terrible.", " Okay I guess.", " Great, wonderful, thanks! (0)"]
    new = _multi(tmp_path / "new.jsonl", prompts, cands)
    cand = {p: [f"{c} ({i})" for c in cands] for i, p in enumerate(prompts)}  # as _multi writes them
    items = [{"prompt": p, "response": c} for p in prompts for c in cand[p]]
    for run in trained["runs"]:
        want = _scores_via_cli(trained, run, new, tmp_path / f"{run}.parquet")
        by_key = {k: i for i, k in enumerate(want["item_key"].to_pylist())}
        assert want.column_names[:6] == ["item_key", "prompt_id", "response_index", "role", "prompt", "response"]
        members = np.stack(want["member_scores"].to_numpy(zero_copy_only=False))  # (items, M)
        for how in AGGREGATIONS:
            status, out = served.post("/v1/rewards", {"rm": run, "items": items, "aggregation": how,
                                                      "members": True})
            assert status == 200, out
            got = np.array([d["reward"] for d in out["data"]])
            rows = [by_key[d["item_key"]] for d in out["data"]]
            np.testing.assert_allclose(got, want[f"score_{how.replace('-', '_')}"].to_numpy()[rows], atol=1e-5)
            np.testing.assert_allclose(np.array([d["members"] for d in out["data"]]), members[rows], atol=1e-5)
            np.testing.assert_allclose([d["std"] for d in out["data"]], members[rows].std(1), atol=1e-5)
            assert all(d["cached"] for d in out["data"])  # the score command embedded them: the cache has them
        mean = want["score_mean"].to_numpy()
        status, out = served.post("/get_reward?rm=" + run, {"query": [it["prompt"] + it["response"] for it in items],
                                                           "prompts": [it["prompt"] for it in items]})
        assert status == 200 and set(out) == {"rewards", "scores", "extra_logs"}
        keys = [item_key(it["prompt"], it["response"]) for it in items]
        np.testing.assert_allclose(out["rewards"], mean[[by_key[k] for k in keys]], atol=1e-5)
        for p in prompts:
            docs = cand[p]
            status, out = served.post("/v1/rerank", {"model": run, "query": p, "documents": docs})
            want_order = sorted(range(len(docs)), key=lambda j: -mean[by_key[item_key(p, docs[j])]])
            assert [r["index"] for r in out["results"]] == want_order, (run, out)  # a brute-force sort
            assert [r["document"]["text"] for r in out["results"]] == [docs[j] for j in want_order]
            status, out = served.post("/score", {"model": run, "text_1": p, "text_2": docs})
            np.testing.assert_allclose([d["score"] for d in out["data"]],
                                       [mean[by_key[item_key(p, c)]] for c in docs], atol=1e-5)
    status, body, _ = http("POST", served.url + "/v1/rewards", json.dumps({"rm": "bt", "items": items[:3],
                                                                           "members": True}).encode(),
                           {"Content-Type": "application/json", "Accept": "application/vnd.apache.arrow.stream"})
    t = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
    assert t.column_names == ["item_key", "reward", "std", "cached", "n_tokens", "truncated", "members"]


def test_a_bt_reward_is_the_plain_forward_pass_of_its_weights(trained, served):
    """Independent of embrm's scorer: numpy over the safetensors and the served vector."""
    it = {"prompt": "Plain check?", "response": " A response nobody embedded before."}
    status, emb = served.post("/v1/embed", {"items": [it]})
    x = np.array(emb["items"][0]["vectors"]["-1"], np.float64)
    w = load_file(str(trained["runs"]["bt"] / "weights.safetensors"))
    std = trained["runs"]["bt"] / "standardize.safetensors"
    if std.exists():  # standardised runs score (x - mean) / std
        s = load_file(str(std))
        x = (x - s["mean"]) / s["std"]
    h = x[None, :]
    members = []
    for m in range(w["w0"].shape[0]):
        h = x[None, :]
        for i in range(3):
            h = h @ w[f"w{i}"][m] + w[f"b{i}"][m]
            if i < 2:
                h = np.maximum(h, 0)
        members.append(float(h[0, 0]))
    status, out = served.post("/v1/rewards", {"rm": "bt", "items": [it], "members": True})
    np.testing.assert_allclose(out["data"][0]["members"], members, atol=1e-4)
    assert out["data"][0]["reward"] == pytest.approx(np.mean(members), abs=1e-4)
    assert out["data"][0]["cached"] is True and out["usage"]["prompt_tokens"] > 0


def test_openrlhf_shaped_requests_and_the_refusal_of_a_query_without_its_prompt(served):
    requests = pytest.importorskip("requests")
    url = served.url + "/get_reward"
    assert url.startswith("http://127.0.0.1:")
    r = requests.post(url, json={"query": ["Hi? Hello!", "Hi? Go away."], "prompts": ["Hi?", "Hi?"],
                                 "labels": ["", ""]}, params={"rm": "linear", "aggregation": "mean-std",
                                                              "beta": 0.5}, timeout=60)
    assert r.status_code == 200 and len(r.json()["rewards"]) == 2 and len(r.json()["extra_logs"]["reward_std"]) == 2
    r = requests.post(url, json={"query": ["Hi? Hello!", "Something else"], "prompts": ["Hi?", "Hi?"]}, timeout=60)
    assert r.status_code == 400 and "query[1] does not start with prompts[1]" in r.json()["error"]["message"]
    r = requests.post(url, json={"query": ["Hi? Hello!"]}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompts"


def test_listing_bad_input_and_what_cannot_be_served(served, trained):
    status, raw, _ = served.get("/v1/rms")
    listed = {d["name"]: d for d in json.loads(raw)["data"]}
    assert set(listed) == {"bt", "clf", "linear", "lgbm", "logreg"} and listed["bt"]["members"] == 3
    assert listed["bt"]["servable"] and listed["bt"]["source"] == "dir" and "validation" in str(listed["bt"]["metrics"])
    time.sleep(1)  # the committer has written what earlier requests computed
    st = open_store(trained["store"])
    before = {n: st.tables.get(n).version for n in st.tables.names()}
    for path, payload, code in [("/v1/rewards", {"rm": "nope", "items": [{"prompt": "a", "response": "b"}]}, 404),
                                ("/v1/rewards", {"items": [{"prompt": "", "response": ""}]}, 400),
                                ("/v1/rewards", {"items": [], "rm": "bt"}, 400),
                                ("/v1/rewards", {"items": [{"prompt": "a", "response": "b"}],
                                                 "aggregation": "median"}, 400),
                                ("/v1/rewards", {"items": [{"prompt": "a", "response": "b"}], "lambda": "x"}, 400),
                                ("/v1/rerank", {"query": "q", "documents": []}, 400),
                                ("/score", {"text_1": ["a", "b"], "text_2": ["c"]}, 400),
                                ("/get_reward", {"query": "not a list"}, 400)]:
        status, out = served.post(path, payload)
        assert status == code and set(out["error"]) == {"message", "type", "param", "code"}, (path, payload, out)
    st = open_store(trained["store"])
    assert {n: st.tables.get(n).version for n in st.tables.names()} == before


def test_a_run_of_another_embedding_is_refused_at_start(tmp_path, trained):
    from test_rm import _multi_store

    _multi_store(tmp_path / "other")  # an entry of another (synthetic) embedding
    res = CliRunner().invoke(cli, ["train", "--model-key", "synthetic-model", "--dataset-key", "synthetic-data",
                                   "--method", "linear", "--epochs", "2", "--out", str(tmp_path / "run"), "--store",
                                   str(tmp_path / "other")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["serve", "--model", str(trained["model"]), "--dtype", "float32", "--store",
                                   str(trained["store"]), "--rm", f"x={tmp_path / 'run'}"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "--rm x=" in res.output, res.output
    assert "trained on embeddings of model synthetic-model" in res.output


def test_push_ls_pull_round_trip_and_a_service_picks_up_a_pushed_run(served, trained, tmp_path):
    r = CliRunner()
    run = trained["runs"]["linear"]
    res = r.invoke(cli, ["rm", "push", str(run), "--name", "shared-linear", "--store", str(trained["store"])])
    assert res.exit_code == 0 and "pushed shared-linear (linear x3" in res.output, res.output
    res = r.invoke(cli, ["rm", "push", str(run), "--name", "shared-linear", "--store", str(trained["store"])])
    assert res.exit_code == 2 and "--force" in res.output
    for store in (str(trained["store"]), served.url):
        res = r.invoke(cli, ["rm", "ls", "--store", store])
        assert res.exit_code == 0 and "shared-linear" in res.output, res.output
        out = tmp_path / f"pulled-{len(list(tmp_path.iterdir()))}"
        res = r.invoke(cli, ["rm", "pull", "shared-linear", "--out", str(out), "--store", store])
        assert res.exit_code == 0, res.output
        for f in run.iterdir():
            if f.is_file() and f.suffix in (".json", ".safetensors", ".png"):
                assert (out / f.name).read_bytes() == f.read_bytes(), f.name  # bit for bit
    res = r.invoke(cli, ["rm", "push", str(trained["runs"]["bt"]), "--name", "via-http", "--store", served.url])
    assert res.exit_code == 0, res.output
    deadline = time.monotonic() + 20  # the service looks at its registry every few seconds
    names: set[str] = set()
    while time.monotonic() < deadline and "via-http" not in names:
        names = {d["name"] for d in json.loads(served.get("/v1/rms")[1])["data"]}
        time.sleep(0.3)
    assert {"shared-linear", "via-http"} <= names
    status, out = served.post("/v1/rewards", {"rm": "via-http", "items": [{"prompt": "p", "response": "r"}]})
    status2, out2 = served.post("/v1/rewards", {"rm": "bt", "items": [{"prompt": "p", "response": "r"}]})
    assert status == status2 == 200 and out["data"][0]["reward"] == pytest.approx(out2["data"][0]["reward"])
    res = r.invoke(cli, ["rm", "pull", "nope", "--out", str(tmp_path / "x"), "--store", served.url])
    assert res.exit_code == 2 and "no reward model named 'nope'" in res.output
    bad = tmp_path / "bad-run"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"run_format": 2, "train": {"method": "bt", "ensemble": 2},
                                                 "dim": 32}))
    (bad / "weights.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    res = r.invoke(cli, ["rm", "push", str(bad), "--name", "bad", "--store", served.url])
    assert res.exit_code == 2 and "the config implies" in res.output, res.output
    from embrm.store.wire import run_files_ipc  # the server checks too, whatever a client sends

    files = {f.name: f.read_bytes() for f in bad.iterdir()}
    status, raw, _ = http("PUT", served.url + "/v1/rms/bad", run_files_ipc(files),
                          {"Content-Type": "application/vnd.apache.arrow.stream"})
    assert status == 400 and "the config implies" in json.loads(raw)["error"]["message"]
    status, raw, _ = http("PUT", served.url + "/v1/rms/bad", run_files_ipc({**files, "../evil.json": b"{}"}),
                          {"Content-Type": "application/vnd.apache.arrow.stream"})
    assert status == 400 and "is not a file a run holds" in json.loads(raw)["error"]["message"]
    assert "bad" not in {d["name"] for d in json.loads(served.get("/v1/rms")[1])["data"]}


def test_a_standardised_logreg_is_served_scored_and_shared_with_its_statistics(trained, served, tmp_path):
    """A run with standardisation statistics (logreg standardises by default): its reward
    is w . (x - mean) / std, computed here in numpy from the run's two files, and that is
    what `embrm serve --rm` answers, what `embrm score` writes, and what a service serves
    of the run pushed through the store; pulled back, both files are bit for bit."""
    run = trained["runs"]["logreg"]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["run_format"] == 2 and cfg["train"]["method"] == "logreg" and cfg["train"]["standardize"] is True
    data = _multi(tmp_path / "new.jsonl", ["Standardised, are you?"], [" Yes, quite.", " No. Awful.", " Fine, thanks!"])
    items = [{"prompt": r["prompt"], "response": c} for r in map(json.loads, data.read_text().splitlines())
             for c in r["responses"]]
    status, emb = served.post("/v1/embed", {"items": items})
    assert status == 200, emb
    x = np.array([it["vectors"]["-1"] for it in emb["items"]], np.float64)
    stats, w = load_file(str(run / "standardize.safetensors")), load_file(str(run / "weights.safetensors"))
    assert set(stats) == {"mean", "std"} and stats["mean"].shape == (x.shape[1],) and (stats["std"] > 0).all()
    assert w["w0"].shape == (2, x.shape[1], 1) and not w["b0"].any()  # Bradley-Terry logreg: no intercept
    members = ((x - stats["mean"]) / stats["std"]) @ w["w0"][:, :, 0].T.astype(np.float64)  # (items, members)
    unstandardised = x @ w["w0"][:, :, 0].T.astype(np.float64)
    assert not np.allclose(members, unstandardised, atol=1e-2)  # the statistics matter to these numbers

    status, out = served.post("/v1/rewards", {"rm": "logreg", "items": items, "members": True})
    assert status == 200, out
    np.testing.assert_allclose([d["members"] for d in out["data"]], members, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose([d["reward"] for d in out["data"]], members.mean(1), rtol=1e-4, atol=1e-4)
    want = _scores_via_cli(trained, "logreg", data, tmp_path / "logreg.parquet")
    by_key = {k: i for i, k in enumerate(want["item_key"].to_pylist())}
    rows = [by_key[item_key(it["prompt"], it["response"])] for it in items]
    np.testing.assert_allclose(np.stack(want["member_scores"].to_numpy(zero_copy_only=False))[rows], members,
                               rtol=1e-4, atol=1e-4)

    r = CliRunner()
    res = r.invoke(cli, ["rm", "push", str(run), "--name", "std-logreg", "--store", served.url])
    assert res.exit_code == 0 and "pushed std-logreg (logreg x2" in res.output, res.output
    res = r.invoke(cli, ["rm", "pull", "std-logreg", "--out", str(tmp_path / "pulled"), "--store",
                         str(trained["store"])])
    assert res.exit_code == 0, res.output
    for name in ("config.json", "weights.safetensors", "standardize.safetensors"):
        assert (tmp_path / "pulled" / name).read_bytes() == (run / name).read_bytes(), name
    deadline = time.monotonic() + 20  # the service looks at its registry every few seconds
    status, out = 404, {}
    while time.monotonic() < deadline and status != 200:
        status, out = served.post("/v1/rewards", {"rm": "std-logreg", "items": items, "members": True})
        time.sleep(0.3)
    assert status == 200, out
    np.testing.assert_allclose([d["members"] for d in out["data"]], members, rtol=1e-4, atol=1e-4)

    bad = tmp_path / "bad-stats"  # statistics of another width are refused before they are stored
    bad.mkdir()
    for f in ("config.json", "weights.safetensors"):
        (bad / f).write_bytes((run / f).read_bytes())
    save_file({"mean": np.zeros(3, np.float32), "std": np.ones(3, np.float32)}, str(bad / "standardize.safetensors"))
    res = r.invoke(cli, ["rm", "push", str(bad), "--name", "bad-stats", "--store", str(trained["store"])])
    assert res.exit_code == 2 and "has no tensor mean" in res.output or "config implies" in res.output, res.output


def test_train_push_publishes_from_a_trainer_elsewhere(served, trained):
    res = CliRunner().invoke(cli, ["train", "--model-key", trained["model_hash"], "--dataset-key", "train", "--method",
                                   "linear", "--epochs", "2", "--push", "remote-trained", "--store", served.url])
    assert res.exit_code == 0 and "pushed remote-trained to " + served.url in res.output, res.output
    assert "remote-trained" in {r["name"] for r in open_store(trained["store"]).runs()}


def test_the_reward_client_and_a_trl_shaped_reward_function(served):
    client = RewardClient(served.url, rm="bt")
    fn = client.reward_func
    assert fn.__name__ == "embrm_bt"
    plain = fn(prompts=["Hi?", "Hi?"], completions=[" Hello!", " Go away."], completion_ids=[[1], [2]])
    chat = fn(prompts=[[{"role": "user", "content": "Hi?"}]] * 2,
              completions=[[{"role": "assistant", "content": c}] for c in (" Hello!", " Go away.")])
    assert plain == chat == client.rewards(["Hi?", "Hi?"], [" Hello!", " Go away."])
    best = client.rerank("Hi?", [" Go away.", " Hello!"])
    assert sorted(r["index"] for r in best) == [0, 1] and best[0]["relevance_score"] == max(plain)
    items = client.score(["Hi?"], [" Hello!"], aggregation="mean-var", coef=0.5, members=True)
    m = np.array(items[0]["members"])
    assert items[0]["reward"] == pytest.approx(float(aggregate(m[:, None], "mean-var", 0.5)[0]), abs=1e-5)


def test_rerank_writes_each_prompts_best_response(trained, tmp_path):
    new = _multi(tmp_path / "cands.jsonl", ["Pick one?", "And here?"], [" Fine.", " Wonderful, thanks!", " Bad."])
    out = tmp_path / "best.jsonl"
    res = CliRunner().invoke(cli, ["rerank", str(trained["runs"]["bt"]), "--dataset", str(new), "--out", str(out),
                                   "--store", str(trained["store"]), "--quiet"])
    assert res.exit_code == 0 and "2 prompts, 6 candidates" in res.output, res.output
    scores = _scores_via_cli(trained, "bt", new, tmp_path / "s.parquet").to_pylist()
    for line in out.read_text().splitlines():
        pick = json.loads(line)
        mine = [r for r in scores if r["prompt"] == pick["prompt"]]
        assert pick["response"] == max(mine, key=lambda r: r["score_mean"])["response"] and pick["candidates"] == 3


@pytest.mark.slow
def test_one_grpo_step_of_trl_with_the_served_reward(served, tmp_path):
    trl = pytest.importorskip("trl")
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conftest import build_tiny_model

    policy_dir = build_tiny_model(tmp_path / "policy")
    tok = AutoTokenizer.from_pretrained(policy_dir)
    policy = AutoModelForCausalLM.from_pretrained(policy_dir)
    calls: list[int] = []
    client = RewardClient(served.url, rm="linear")
    inner = client.reward_func

    def reward(prompts=None, completions=None, **kw):
        calls.append(len(completions))
        return inner(prompts=prompts, completions=completions, **kw)

    reward.__name__ = inner.__name__
    args = trl.GRPOConfig(output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=4,
                          max_completion_length=8, max_steps=1, logging_steps=1, report_to=[], use_cpu=True,
                          save_strategy="no", bf16=False)
    data = Dataset.from_dict({"prompt": ["Hi?", "Tell me a story.", "Why?", "Go on."]})
    trainer = trl.GRPOTrainer(model=policy, reward_funcs=[reward], args=args, train_dataset=data,
                              processing_class=tok)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    trainer.train()
    assert calls and sum(calls) >= 4
    assert any(not torch.equal(before[k], v) for k, v in policy.state_dict().items())


def test_the_openapi_spec_declares_each_answer_and_real_answers_match_it(served):
    """Issue 29: request and response models live in serve/protocol/; the spec declares
    every route's answer and its error answers (400 for invalid input, never FastAPI's
    422), and what the routes really send validates against those models."""
    from embrm.serve.protocol import embeddings as pe
    from embrm.serve.protocol import entries as pn
    from embrm.serve.protocol import errors as px
    from embrm.serve.protocol import rewards as pr

    status, raw, _ = served.get("/openapi.json")
    spec = json.loads(raw)
    ops = {(m.upper(), p): op for p, d in spec["paths"].items() for m, op in d.items()}
    for (m, p), op in ops.items():
        assert "422" not in op["responses"], (m, p)
        if p.startswith("/v1/") and p not in ("/v1/stats", "/v1/models", "/v1/info"):
            assert {"400", "401"} <= set(op["responses"]), (m, p)
            assert op["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    item = {"prompt": "Hi?", "response": "Hello!"}
    entry = json.loads(served.get("/v1/entries")[1])["data"][0]
    calls = [("POST", "/v1/embeddings", {"input": ["Hello!"], "prompt": "Hi?"}, pe.EmbeddingsResponse),
             ("POST", "/v1/embed", {"items": [item]}, pe.EmbedResponse),
             ("POST", "/v1/rewards", {"items": [item], "members": True, "aggregation": "mean-std"},
              pr.RewardsResponse),
             ("POST", "/get_reward", {"query": ["Hi? Hello!"], "prompts": ["Hi?"]}, pr.OpenRLHFResponse),
             ("POST", "/v1/rerank", {"query": "Hi?", "documents": ["Hello!", {"text": "Go away."}]},
              pr.RerankResponse),
             ("POST", "/score", {"text_1": "Hi?", "text_2": ["Hello!", "Go away."]}, pr.ScoreResponse),
             ("GET", "/v1/rms", None, pr.RewardModelList), ("GET", "/v1/entries", None, pn.EntryList),
             ("GET", "/v1/jobs", None, pn.JobList),
             ("GET", f"/v1/entries/{entry['model_hash']}/{entry['dataset_hash']}", None, pn.EntryState)]
    for method, path, payload, model in calls:
        status, body = served.post(path, payload) if method == "POST" else \
            (lambda s: (s[0], json.loads(s[1])))(served.get(path))
        assert status == 200, (path, body)
        model.model_validate(body)
        template = path if path in {p for _, p in ops} else "/v1/entries/{model}/{dataset}"
        declared = ops[(method, template)]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        assert declared.endswith("/" + model.__name__), (path, declared)
    # the aggregation's name is checked once, at the edge: the request model refuses it
    status, body = served.post("/v1/rewards", {"items": [item], "aggregation": "median"})
    assert status == 400 and body["error"]["param"] == "aggregation"
    px.ErrorResponse.model_validate(body)
