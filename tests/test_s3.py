"""The store on object storage: a real S3-compatible server (moto, server mode) on a loopback
port, credentials checked, the store reached through the standard AWS environment."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from embrm.cli import main as cli
from embrm.store import open_store
from embrm.store import schema as S

from conftest import EXTRACT_SCRIPT
from procs import kill_after

HERE = Path(__file__).parent
pytest.importorskip("moto")


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, **kw)


def test_extract_with_a_sigkill_resume_cli_and_training_on_s3(s3, tmp_path, tiny_model):
    recs = [{"prompt": f"Question {i % 12}?", "response": f" answer {i}" * (1 + i % 3)} for i in range(40)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    script = tmp_path / "run.py"
    script.write_text(EXTRACT_SCRIPT)
    kill_after([str(script), str(data), str(tiny_model), s3.uri, "0.3"], "window", 2)
    store = open_store(s3.uri)
    [e] = store.entries()
    assert e.status == "partial" and 8 <= len(store.vectors.cached(e.model_hash)) < 40
    out = _run([str(script), str(data), str(tiny_model), s3.uri, "0"]).stdout
    computed, cached = map(int, out.split("done")[1].split())
    assert computed + cached == 40 and cached >= 8
    keys = store.vectors.cached(e.model_hash).to_pylist()
    assert len(keys) == len(set(keys)) == 40 and store.resolve(e.model_hash, e.dataset_hash).status == "complete"

    r = CliRunner()
    res = r.invoke(cli, ["store", "ls", "--store", s3.uri])
    assert res.exit_code == 0 and "d [" in res.output and "complete" in res.output
    res = r.invoke(cli, ["store", "show", e.model_hash[:8], "d", "--store", s3.uri])
    assert res.exit_code == 0 and json.loads(res.output)["rows"] == 40
    res = r.invoke(cli, ["store", "export", e.model_hash[:8], "d", "--out", str(tmp_path / "v.parquet"),
                         "--store", s3.uri])
    assert res.exit_code == 0
    t = pq.read_table(tmp_path / "v.parquet")
    assert t.column("response").to_pylist() == [r_["response"] for r_ in recs]
    vectors = np.stack(t.column("vector").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(vectors, store.load(e.model_hash, "d").vectors)
    assert not list(store.cache.dir.glob("*.npy")) if store.cache.dir.exists() else True  # no local copy

    # train on it: pointwise rows with a reward a linear probe can learn
    rng = np.random.default_rng(0)
    rewarded = [{"prompt": f"q{i // 4}", "response": f"r{i}", "reward": float(rng.standard_normal())}
                for i in range(80)]
    data2 = tmp_path / "rw.jsonl"
    data2.write_text("".join(json.dumps(r_) + "\n" for r_ in rewarded))
    res = r.invoke(cli, ["extract", "--dataset", str(data2), "--model", str(tiny_model), "--dtype", "float32",
                         "--quiet", "--store", s3.uri])
    assert res.exit_code == 0, res.output
    res = r.invoke(cli, ["train", "--model-key", e.model_hash[:8], "--dataset-key", "rw", "--method", "linear",
                         "--epochs", "3", "--bon", "1,2,4", "--out", str(tmp_path / "run"), "--store", s3.uri])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["store"] == s3.uri
    # publish the run in the bucket, list it, pull it back bit for bit; gc keeps it
    res = r.invoke(cli, ["rm", "push", str(tmp_path / "run"), "--name", "s3-linear", "--store", s3.uri])
    assert res.exit_code == 0 and "pushed s3-linear (linear x1" in res.output, res.output
    res = r.invoke(cli, ["rm", "ls", "--store", s3.uri])
    assert res.exit_code == 0 and "s3-linear" in res.output
    res = r.invoke(cli, ["rm", "pull", "s3-linear", "--out", str(tmp_path / "pulled"), "--store", s3.uri])
    assert res.exit_code == 0, res.output
    for f in ("config.json", "weights.safetensors", "metrics.json"):
        assert (tmp_path / "pulled" / f).read_bytes() == (tmp_path / "run" / f).read_bytes()

    res = r.invoke(cli, ["store", "rm", e.model_hash[:8], "d", "--store", s3.uri])
    assert res.exit_code == 0
    before = len(s3.keys(s3.uri.removeprefix("s3://embrm/")))
    res = r.invoke(cli, ["store", "gc", "--store", s3.uri])
    assert res.exit_code == 0 and "tables dropped: 1" in res.output, res.output
    assert len(s3.keys(s3.uri.removeprefix("s3://embrm/"))) < before
    store = open_store(s3.uri)
    assert [x.dataset_name for x in store.entries()] == ["rw"]
    assert len(store.vectors.cached(e.model_hash)) == 80  # only the training entry's vectors are left
    assert [x["name"] for x in store.runs()] == ["s3-linear"]


def test_the_server_refuses_a_second_conditional_put(s3):
    """Lance commits a version with a conditional put of its manifest; concurrent writers
    are safe only where the server honours ``If-None-Match: *``, as this one must."""
    c = s3.client("s3")
    c.put_object(Bucket="embrm", Key="cond/x", Body=b"1", IfNoneMatch="*")
    with pytest.raises(Exception, match="PreconditionFailed"):
        c.put_object(Bucket="embrm", Key="cond/x", Body=b"2", IfNoneMatch="*")
    assert c.get_object(Bucket="embrm", Key="cond/x")["Body"].read() == b"1"


def test_two_concurrent_writers_on_s3_leave_no_duplicates(s3):
    n = 120
    procs = [subprocess.Popen([sys.executable, str(HERE / "store_writer.py"), s3.uri, str(n), "10", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    sys.path.insert(0, str(HERE))
    from store_writer import MODEL, vector_for

    store = open_store(s3.uri)
    keys = store.vectors.cached(MODEL).to_pylist()
    assert len(keys) == len(set(keys)) == n
    assert store.tables.get(S.dataset_table("d" * 64)).count_rows() == n and len(store.entries()) == 1
    emb = store.load("writer-model", "writer-data")
    np.testing.assert_array_equal(emb.vectors, np.stack([vector_for(k) for k in emb.item_key]))


def test_concurrent_first_writers_on_a_new_prefix_all_agree_on_one_store(s3):
    """A team's first day: several jobs pointed at a new bucket prefix at once."""
    code = "import sys; from embrm.store import open_store; open_store(sys.argv[1], create=True); print('ok')"
    for r in range(8):  # the embrm before this fix failed in 5 of 12 such rounds
        uri = f"{s3.uri}/new-{r}"
        procs = [subprocess.Popen([sys.executable, "-c", code, uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(4)]
        outs = [p.communicate(timeout=300) for p in procs]
        assert all(p.returncode == 0 and o[0].strip() == "ok" for p, o in zip(procs, outs)), \
            [o[1].strip().splitlines()[-1:] for o in outs]
        st = open_store(uri)
        assert st.entries() == [] and st.tables.get(S.META_TABLE).count_rows() == 2
        assert st.tables.names() == {S.CATALOG_TABLE, S.META_TABLE}


def test_object_store_mistakes_are_one_line_and_change_nothing(s3, tmp_path):
    r = CliRunner()
    res = r.invoke(cli, ["store", "ls", "--store", s3.uri])
    assert res.exit_code == 2 and "no embrm store at" in res.output  # nothing there yet, and nothing made
    assert s3.keys(s3.uri.removeprefix("s3://embrm/")) == []
    open_store(s3.uri, create=True)
    objects = sorted(s3.keys(s3.uri.removeprefix("s3://embrm/")))
    cases = [
        ({}, "s3://no-such-bucket/x", "bucket 'no-such-bucket' does not exist"),
        ({"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, s3.uri, "refused the credentials"),
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, s3.uri, "cannot reach the object store at http://127.0.0.1:9"),
    ]
    for env, uri, msg in cases:
        res = _run(["-m", "embrm.cli", "store", "ls", "--store", uri], env={**os.environ, **env})
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and msg in res.stderr, res.stderr
        assert s3.secret not in res.stderr + res.stdout
    import pyarrow as pa

    newer = pa.Table.from_pylist([{"key": "format_version", "value": "99"}], schema=S.META_SCHEMA)
    import lance

    lance.write_dataset(newer, f"{s3.uri}/{S.META_TABLE}.lance", mode="overwrite",
                        storage_options=open_store(s3.uri).storage_options)
    objects = sorted(s3.keys(s3.uri.removeprefix("s3://embrm/")))
    res = _run(["-m", "embrm.cli", "store", "ls", "--store", s3.uri])
    assert res.returncode == 2 and "newer than this embrm" in res.stderr and res.stderr.count("\n") == 1
    assert sorted(s3.keys(s3.uri.removeprefix("s3://embrm/"))) == objects


def test_credentials_appear_nowhere(s3, tmp_path, tiny_model):
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"P{i}", "response": f"R{i}", "reward": float(i % 3)}) + "\n"
                            for i in range(24)))
    outputs = []
    res = _run(["-m", "embrm.cli", "extract", "--dataset", str(data), "--model", str(tiny_model), "--dtype",
                "float32", "--store", s3.uri])
    assert res.returncode == 0, res.stderr
    outputs += [res.stdout, res.stderr]
    for args in (["store", "ls", "--json"], ["store", "show", "tiny", "p"],
                 ["train", "--model-key", "tiny", "--dataset-key", "p", "--method", "linear", "--epochs", "2",
                  "--bon", "1,2", "--out", str(tmp_path / "run")],
                 ["store", "show", "tiny", "nope"]):
        res = _run(["-m", "embrm.cli", *args, "--store", s3.uri])
        outputs += [res.stdout, res.stderr]
    res = _run(["-m", "embrm.cli", "store", "ls", "--store", s3.uri], env={**os.environ,
                                                                         "AWS_SECRET_ACCESS_KEY": "x" * 40})
    outputs += [res.stdout, res.stderr]
    serve = subprocess.Popen([sys.executable, "-m", "embrm.cli", "serve", "--model", str(tiny_model), "--dtype",
                              "float32", "--store", s3.uri, "--port", "0", "--log-level", "debug"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    line = serve.stdout.readline()
    os.killpg(serve.pid, signal.SIGTERM)
    rest, err = serve.communicate(timeout=60)
    outputs += [line, rest, err]
    store = open_store(s3.uri)
    catalog = json.dumps([dict(e.summary(), model_config=e.model_config) for e in store.entries()])
    files = [p.read_text(errors="replace") for p in (tmp_path / "run").rglob("*") if p.suffix in (".json", ".txt")]
    haystack = "\n".join([*outputs, catalog, *files])
    assert "embrm serve: http://127.0.0.1:" in line and json.loads(catalog)
    for secret in (s3.secret, s3.secret[:16]):
        assert secret not in haystack


@pytest.mark.parametrize("where", ["local", "s3"])
def test_racing_creators_of_one_table_get_one_table_at_version_one(s3, tmp_path, where):
    """Lance's own create rebases a loser onto the winner's table as an overwrite
    (lance#4451), which wiped rows another writer had merged; embrm's must not."""
    import threading

    uri = s3.uri + "/race" if where == "s3" else str(tmp_path / "race")
    tables = open_store(uri, create=True).tables
    schema = S.ROW_SCHEMA
    for r in range(4):
        name, barrier, versions = f"t{r}", threading.Barrier(6), []

        def create() -> None:
            barrier.wait(timeout=60)
            versions.append(tables.create(name, schema).version)

        threads = [threading.Thread(target=create) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        ds = tables.get(name)
        assert versions == [1] * 6 and ds.version == 1 and len(ds.versions()) == 1, (versions, ds.versions())
