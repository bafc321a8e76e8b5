"""Reward models in use: served rewards against the embeddings they cost, and scoring a
stored entry against a plain forward pass of the same weights, side by side in one run.

* **equality**: rewards from ``POST /v1/rewards`` against ``embrm score`` of the same
  stored items and run (every aggregation);
* **cached items**: 8 concurrent clients asking ``/v1/rewards`` for stored items (64 a
  request) with a 5-member BT ensemble of the default size (576 -> 1024 -> 512 -> 1),
  rewards/s, beside ``/v1/embed`` of the same items;
* **misses**: a request of 16 new responses to one prompt through ``/v1/rewards``
  against 16 other new responses through ``/v1/embed``, alternating, median of the ratio;
* **scoring an entry**: ``embrm score`` of an entry of 100,000 stored vectors (D=576) with a
  10-member ensemble, against a plain torch forward of the same weights over the same
  array already in memory.

Starts a real ``embrm serve`` (the packaged SmolLM2-135M-Instruct) on loopback. Prints a
table and writes JSON. Needs ../shared/data/hh-rlhf for the texts.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from embrm.extractor.datasets import DatasetSpec, iter_rows

from _common import machine_line, table, write_json
from bench_serve import HH, load, post, start_server


def cli(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "embrm.cli", *args], capture_output=True, text=True,
                          check=True).stdout


def synthetic_entry(store: Path, rows: int, dim: int, members: int, run: Path) -> tuple[str, str]:
    """An entry of ``rows`` random vectors and a ``members``-member BT run on its
    embedding (random weights: scoring costs the same whatever they are)."""
    import torch

    from embrm.rm.models import EnsembleMLP
    from embrm.rm.run import save_run
    from embrm.rm.trainer import RewardModel, TrainConfig
    from embrm.store import item_key, open_store

    mh, dh = "5" * 64, "6" * 64
    st = open_store(store, create=True)
    x = np.random.default_rng(0).standard_normal((rows, dim), dtype=np.float32)
    keys = [item_key(f"p{i // 4}", f"r{i}") for i in range(rows)]
    recs = ({"position": i, "item_key": keys[i], "prompt_id": i // 4, "response_index": i % 4, "role": "",
             "label": None, "reward": 0.0, "prompt": f"p{i // 4}", "response": f"r{i}"} for i in range(rows))
    st.rows.write(dh, recs, rows)
    st.begin_entry(mh, "score-model", {}, dh, "score-data", {}, "multi", rows)
    for s in range(0, rows, 20_000):
        st.writer.write(mh, keys[s:s + 20_000], {-1: x[s:s + 20_000]}, np.ones(min(20_000, rows - s)),
                        np.zeros(min(20_000, rows - s), bool))
    st.finish_entry(mh, dh)
    torch.manual_seed(0)
    tc = TrainConfig(method="bt", ensemble=members)
    save_run(run, RewardModel(tc, dim, net=EnsembleMLP(members, dim, tc.hidden)),
             {"model_hash": mh, "model_name": "score-model", "dataset_hash": dh, "dataset_name": "score-data",
              "layer": -1, "store": str(store)})
    np.save(store.parent / "score.npy", x)
    return mh, dh


def plain_forward(run: Path, x: np.ndarray, chunk: int = 16384) -> tuple[float, np.ndarray]:
    """Every member's score of ``x``, by torch matmuls written out; (seconds, scores)."""
    import torch
    from safetensors.torch import load_file

    w = load_file(str(run / "weights.safetensors"))
    layers = sum(1 for k in w if k.startswith("w"))
    members = w["w0"].shape[0]
    t = time.perf_counter()
    out = np.empty((members, len(x)), np.float32)
    with torch.inference_mode():
        xt = torch.from_numpy(x)
        for m in range(members):
            for s in range(0, len(x), chunk):
                h = xt[s:s + chunk]
                for i in range(layers):
                    h = h @ w[f"w{i}"][m] + w[f"b{i}"][m]
                    if i < layers - 1:
                        h = torch.relu(h)
                out[m, s:s + chunk] = h[:, 0].numpy()
    return time.perf_counter() - t, out


def head_alone(run: Path, dim: int, batch: int = 512, seconds: float = 3.0) -> dict[str, float]:
    """Items a second of the run's members alone, in this process, ``batch`` rows a call:
    the ceiling of cached rewards on this CPU (float32, as served), and the same
    members in bf16 (what a CPU with native bf16 could offer, at bf16's precision)."""
    import torch

    from embrm.rm.run import load_run

    model, _ = load_run(run)
    x = np.random.default_rng(1).standard_normal((batch, dim), dtype=np.float32)
    out = {}
    for name, fn in (("fp32", lambda: model.score(x)),
                     ("bf16", lambda: model.net(torch.from_numpy(x).bfloat16()))):
        with torch.inference_mode():
            fn()
            n, t = 0, time.perf_counter()
            while time.perf_counter() - t < seconds:
                fn()
                n += 1
            out[name] = n * batch / (time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=300, help="HH-RLHF pairs stored and served")
    ap.add_argument("--requests", type=int, default=120, help="cached-item requests (64 items each)")
    ap.add_argument("--miss-rounds", type=int, default=8)
    ap.add_argument("--score-rows", type=int, default=100_000)
    ap.add_argument("--json", default="reward.json")
    a = ap.parse_args()
    if not HH.exists():
        raise SystemExit(f"needs {HH}")
    rows = list(iter_rows(DatasetSpec(str(HH))))
    res: dict = {}
    out_rows: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        # ---------------------------------------------- scoring an entry (no server)
        run10 = d / "run10"
        synthetic_entry(d / "synth", a.score_rows, 576, 10, run10)
        x = np.load(d / "score.npy")
        t_plain, want = plain_forward(run10, x)
        t = time.perf_counter()
        cli("score", str(run10), "--dataset-key", "score-data", "--out", str(d / "s.parquet"), "--store",
            str(d / "synth"))
        t_score = time.perf_counter() - t
        import pyarrow.parquet as pq

        got = np.stack(pq.read_table(d / "s.parquet")["member_scores"].to_numpy(zero_copy_only=False)).T
        res["score_entry"] = {"rows": a.score_rows, "members": 10, "plain_s": t_plain, "embrm_score_s": t_score,
                              "ratio": t_plain / t_score, "max_abs_diff": float(np.abs(got - want).max())}
        out_rows.append({"what": f"embrm score, {a.score_rows:,} x 576, 10 members", "value": f"{t_score:.2f} s",
                         "against": f"plain torch forward {t_plain:.2f} s", "ratio": f"{t_plain / t_score:.2f}x",
                         "target": ">= 0.5x"})
        # ---------------------------------------------------- a served HH store
        hh = d / "hh.jsonl"
        keep = rows[: 2 * a.pairs]
        pairs = [{"prompt": c["prompt"], "chosen": c["response"], "rejected": r["response"]}
                 for c, r in zip(keep[0::2], keep[1::2])]
        hh.write_text("".join(json.dumps(p) + "\n" for p in pairs))
        cli("extract", "--dataset", str(hh), "--store", str(d / "store"), "--quiet")
        info = json.loads(cli("store", "ls", "--json", "--store", str(d / "store")))[0]
        run5 = d / "run5"
        cli("train", "--model-key", info["model_hash"], "--dataset-key", info["dataset_hash"], "--method", "bt",
            "--ensemble", "5", "--epochs", "1", "--out", str(run5), "--store", str(d / "store"))
        cli("score", str(run5), "--dataset-key", info["dataset_hash"], "--out", str(d / "hh.parquet"), "--store",
            str(d / "store"))
        want_t = pq.read_table(d / "hh.parquet")
        proc, url = start_server(d / "store", "--rm", f"bt5={run5}")
        try:
            items = [{"prompt": r["prompt"], "response": r["response"]} for r in keep]
            diffs = []
            for how in ("mean", "min", "single", "mean-var", "mean-std"):
                got_r = []
                for s in range(0, len(items), 256):
                    got_r += [x["reward"] for x in post(url + "/v1/rewards", {"rm": "bt5", "items": items[s:s + 256],
                                                                              "aggregation": how})["data"]]
                diffs.append(float(np.abs(np.array(got_r) - want_t[f"score_{how.replace('-', '_')}"].to_numpy())
                                   .max()))
            res["equality_max_abs_diff"] = max(diffs)
            out_rows.append({"what": "served rewards vs embrm score (5 aggregations)", "value": f"{max(diffs):.1e}",
                             "against": "", "ratio": "", "target": "<= 1e-5"})
            # cached items, concurrency 8
            reqs = [{"rm": "bt5", "items": [items[(i * 64 + j) % len(items)] for j in range(64)]}
                    for i in range(a.requests)]
            post(url + "/v1/rewards", reqs[0])
            wall, lat = load(url + "/v1/rewards", reqs, 8)
            rps = a.requests * 64 / wall
            ereqs = [{"items": r["items"], "encoding_format": "base64"} for r in reqs]
            wall_e, _ = load(url + "/v1/embed", ereqs, 8)
            eps = a.requests * 64 / wall_e
            head = head_alone(run5, 576)
            head["fp32_64_rows"] = head_alone(run5, 576, batch=64)["fp32"]  # why the scorer batches requests
            res["cached"] = {"rewards_per_s": rps, "embed_per_s": eps, "p50_ms": 1000 * float(np.median(lat)),
                             "head_alone_per_s": head}
            out_rows.append({"what": "cached items, concurrency 8, 5 x (1024,512)", "value": f"{rps:,.0f} rewards/s",
                             "against": f"/v1/embed {eps:,.0f} vectors/s", "ratio": f"{rps / eps:.2f}x",
                             "target": ">= 20,000/s"})
            out_rows.append({"what": "  the 5 members alone, in process, 512 rows a call", "value":
                             f"{head['fp32']:,.0f} items/s", "against": f"bf16 {head['bf16']:,.0f} items/s",
                             "ratio": f"served {rps / head['fp32']:.2f}x", "target": ""})
            # misses: 16 new responses to one prompt
            fresh = [r for r in rows[2 * a.pairs:] if r["response"].strip()]
            ratios, t_r, t_e = [], [], []
            for k in range(a.miss_rounds):
                base = fresh[k * 40]["prompt"]
                resp = [r["response"] for r in fresh[k * 40: k * 40 + 32]]
                first, second = (("embed", "rewards") if k % 2 == 0 else ("rewards", "embed"))
                times = {}
                for route, part in ((first, resp[:16]), (second, resp[16:])):
                    body = {"items": [{"prompt": base, "response": x} for x in part]}
                    if route == "rewards":
                        body["rm"] = "bt5"
                    t = time.perf_counter()
                    post(f"{url}/v1/{route}", body)
                    times[route] = time.perf_counter() - t
                ratios.append(times["rewards"] / times["embed"])
                t_r.append(times["rewards"])
                t_e.append(times["embed"])
            res["misses"] = {"median_ratio": float(np.median(ratios)), "rewards_s": t_r, "embed_s": t_e}
            out_rows.append({"what": "16 new responses to one prompt", "value": f"{np.median(t_r):.3f} s",
                             "against": f"/v1/embed {np.median(t_e):.3f} s",
                             "ratio": f"{np.median(ratios):.2f}x", "target": "<= 1.1x"})
        finally:
            proc.terminate()
            proc.wait(60)
    print(machine_line())
    print(table(out_rows, ["what", "value", "against", "ratio", "target"]))
    write_json(a.json, res)


if __name__ == "__main__":
    main()
