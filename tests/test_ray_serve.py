"""``embrm serve --ray``: the same service as a Ray Serve deployment of 2 CPU replicas on a
local Ray, driven by the OpenAI client, a reward request and a dataset job."""
from __future__ import annotations

import json
import signal

import numpy as np
import pytest
from click.testing import CliRunner

from embrm.cli import main as cli
from embrm.store import item_key, open_store

from replicas import dataset, start_job, train_run, wait_for
from s3server import free_port
from servers import Server, http

pytest.importorskip("fastapi")
pytest.importorskip("ray.serve", reason="needs Ray Serve: pip install 'embrm[ray,serve]'")
pytestmark = pytest.mark.slow


def test_two_ray_serve_replicas_serve_vectors_rewards_and_a_job(tmp_path, tiny_model):
    openai = pytest.importorskip("openai")
    run = train_run(tmp_path, tiny_model)
    store = tmp_path / "store"
    s = Server(tiny_model, store, "--ray", "--replicas", "2", "--port", str(free_port()), "--refresh-seconds", "0.5")
    try:
        wait_for(lambda: http("GET", s.url + "/health")[0] == 200, 120, 0.5)
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        texts = [f"ray serve text {i}" for i in range(6)]
        got = client.embeddings.create(input=texts, model=client.models.list().data[0].id)
        # the same vectors as the plain service's model, computed here without a server
        from embrm.extractor.embedder import Embedder, EmbeddingSpec

        want = Embedder(EmbeddingSpec(str(tiny_model), dtype="float32"), "cpu").load().embed([""] * 6, texts)
        np.testing.assert_allclose(np.array([d.embedding for d in got.data]), want.vectors[-1], atol=2e-5)
        replicas: set[str] = set()
        for _ in range(40):  # Ray's proxy spreads requests: both replicas answer
            replicas.add(json.loads(http("GET", s.url + "/v1/stats")[1])["replica"])
            if len(replicas) == 2:
                break
        assert len(replicas) == 2 and all(r.startswith("ray-") for r in replicas), replicas
        res = CliRunner().invoke(cli, ["rm", "push", str(run), "--name", "shared", "--store", s.url])
        assert res.exit_code == 0, res.output
        one = {"items": [{"prompt": "p", "response": "r"}]}
        r = wait_for(lambda: (x := http("POST", s.url + "/v1/rewards", json.dumps(one).encode(),
                                        {"Content-Type": "application/json"}))[0] == 200 and json.loads(x[1]), 20)
        assert np.isfinite(r["data"][0]["reward"])
        scan = dataset(tmp_path / "job.jsonl", 96)
        start_job(s.url, scan)

        def done() -> list[dict]:
            return [j for j in json.loads(http("GET", s.url + "/v1/jobs")[1])["data"] if j["status"] == "complete"]

        [job] = wait_for(done, 120, 0.5)
        assert job["owner"].startswith("ray-")
    finally:
        rc = s.stop(signal.SIGTERM)
    assert rc == 0, s.log()[-3000:]
    st = open_store(store)
    mh = st.entries()[0].model_hash
    keys = st.vectors.cached(mh).to_pylist()
    want_keys = {item_key(r["prompt"], r["response"]) for r in scan.rows()} | {item_key("", t) for t in texts}
    assert len(keys) == len(set(keys)) and want_keys <= set(keys)  # served vectors flushed at shutdown too
    assert st.resolve(mh, scan.dataset_hash).status == "complete"
