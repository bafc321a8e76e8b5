"""The service under load, against offline extraction, on the same items in one run.

Starts a real ``embrm serve`` (the packaged SmolLM2-135M-Instruct, a fresh store, on a
free loopback port) and measures:

* **misses**: single-item requests of HH-RLHF responses at concurrency 1, 8 and 32 (a
  disjoint set of items for each level, so every request needs a forward pass): items/s,
  tok/s and p50/p99 latency, against ``embrm extract`` of the same items offline;
* **hits**: the same items again, in requests of 256 items with base64 encoding:
  vectors/s and latency;
* **entry pull**: an entry of 100,000 x 576 float32 vectors pulled as an Arrow stream, MB/s
  against ``np.load`` of the same array from a ``.npy`` on the same disk;
* **dataset job**: a dataset uploaded and extracted by ``POST /v1/entries``, tok/s
  against offline ``embrm extract`` of the same rows into another store.

Prints a table and writes JSON. Needs ../shared/data/hh-rlhf for the texts.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from embrm.extractor.datasets import DatasetSpec, iter_rows

from _common import machine_line, table, write_json

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def start_server(store: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    args = [sys.executable, "-m", "embrm.cli", "serve", "--store", str(store), "--port", "0", *extra]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    line = p.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    if not m:
        p.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return p, f"http://127.0.0.1:{m.group(1)}"


def post(url: str, payload: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def load(url: str, requests: list[dict], concurrency: int) -> tuple[float, list[float]]:
    """Send every request with ``concurrency`` threads; (wall seconds, each latency)."""
    lat: list[float] = []
    lock = threading.Lock()
    todo = list(enumerate(requests))

    def worker() -> None:
        while True:
            with lock:
                if not todo:
                    return
                _, payload = todo.pop()
            t = time.perf_counter()
            post(url, payload)
            with lock:
                lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, lat


def offline(texts: list[dict], store: Path) -> dict:
    """``embrm extract`` of pointwise rows in a fresh process; its own tok/s report."""
    data = store.parent / f"{store.name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in texts))
    out = subprocess.run([sys.executable, "-m", "embrm.cli", "extract", "--dataset", str(data), "--store", str(store),
                          "--quiet"], capture_output=True, text=True, check=True).stdout
    tok_s = float(re.search(r"([\d,]+) tok/s", out).group(1).replace(",", ""))
    return {"tok_s": tok_s, "report": out.strip().splitlines()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-level", type=int, default=96, help="least missing items per concurrency level")
    ap.add_argument("--list-items", type=int, default=8, help="items per request in the list-request scenario")
    ap.add_argument("--job-rows", type=int, default=600)
    ap.add_argument("--pull-rows", type=int, default=100_000)
    ap.add_argument("--json", default="serve.json")
    a = ap.parse_args()
    if not HH.exists():
        raise SystemExit(f"needs {HH}")
    rows = list(iter_rows(DatasetSpec(str(HH))))
    responses = [r["response"] for r in rows if r["response"].strip()]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(responses))
    levels = (1, 8, 32)
    # (clients, items per request, items): every item a miss, each scenario its own items;
    # enough requests that each client sends ten or more
    scenarios = [(c, 1, max(a.per_level, 10 * c)) for c in levels] + [(32, a.list_items, 40 * a.list_items)]
    sets, at = [], 0
    for _, _, n in scenarios:
        sets.append([responses[i] for i in order[at:at + n]])
        at += n
    job_texts = [{"prompt": rows[i]["prompt"], "response": rows[i]["response"]} for i in order[at:at + a.job_rows]]
    results: list[dict] = []
    out: dict = {"levels": {}}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        off = offline([{"prompt": "", "response": t} for s in sets for t in s], d / "offline")
        out["offline_misses_tok_s"] = off["tok_s"]
        results.append({"what": "offline extract (miss items)", "concurrency": "-", "items/s": None,
                        "tok/s": off["tok_s"], "p50 ms": None, "p99 ms": None, "vs offline": 1.0})
        proc, url = start_server(d / "store")
        try:
            post(url + "/v1/embeddings", {"input": "warm up the model"})
            info = json.loads(urllib.request.urlopen(url + "/v1/info").read())
            for (level, per, _), texts in zip(scenarios, sets):
                before = _metrics(url)
                reqs = [{"input": texts[i:i + per] if per > 1 else texts[i]} for i in range(0, len(texts), per)]
                wall, lat = load(url + "/v1/embeddings", reqs, level)
                after = _metrics(url)
                d_ = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
                tok, fwd = d_["embrm_tokens_total"], d_["embrm_forward_seconds_total"]
                row = {"what": "served misses" + (f", {per} items/request" if per > 1 else ""), "concurrency": level,
                       "items/s": len(texts) / wall, "tok/s": tok / wall, "p50 ms": 1e3 * np.median(lat),
                       "p99 ms": 1e3 * np.quantile(lat, 0.99), "vs offline": tok / wall / off["tok_s"],
                       "mean batch": d_["embrm_batch_items_sum"] / max(1, d_["embrm_batch_items_count"]),
                       "model busy": fwd / wall, "tok/s in forward calls": tok / fwd}
                results.append(row)
                out["levels"][f"miss_{level}" + (f"x{per}" if per > 1 else "")] = row
            hit_items = [t for s_ in sets for t in s_][:256]
            for level in levels:
                reqs = [{"input": hit_items, "encoding_format": "base64"}] * max(8, 4 * level)
                wall, lat = load(url + "/v1/embeddings", reqs, level)
                row = {"what": "cached lookups, 256/request, base64", "concurrency": level,
                       "items/s": 256 * len(reqs) / wall, "tok/s": None, "p50 ms": 1e3 * np.median(lat),
                       "p99 ms": 1e3 * np.quantile(lat, 0.99), "vs offline": None}
                results.append(row)
                out["levels"][f"hit_{level}"] = row
            vec = _b64_first(post(url + "/v1/embeddings", {"input": hit_items[:1], "encoding_format": "base64"}))
            assert vec.shape == (info["dim"],)
            out["pull"] = _pull(url, d)
            results.append({"what": f"entry pull {a.pull_rows} x 576 float32 (MB/s)", "concurrency": 1,
                            "items/s": out["pull"]["rows_per_s"], "tok/s": None, "p50 ms": None, "p99 ms": None,
                            "vs offline": None, "MB/s": out["pull"]["mb_s"],
                            "vs np.load": out["pull"]["vs_np_load"]})
            out["job"] = _job(url, d, job_texts)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
        out["ceiling"] = _batch_ceiling(sets[2])
        results.append({"what": "Embedder alone, 32-item batches", "concurrency": "-", "items/s": None,
                        "tok/s": out["ceiling"]["batch_32"], "p50 ms": None, "p99 ms": None,
                        "vs offline": out["ceiling"]["batch_32"] / off["tok_s"]})
        off_job = offline(job_texts, d / "offline-job")
        out["job"]["offline_tok_s"] = off_job["tok_s"]
        out["job"]["vs_offline"] = out["job"]["tok_s"] / off_job["tok_s"]
        results.append({"what": f"dataset job ({a.job_rows} rows)", "concurrency": "-", "items/s": None,
                        "tok/s": out["job"]["tok_s"], "p50 ms": None, "p99 ms": None,
                        "vs offline": out["job"]["vs_offline"]})
        results.append({"what": "offline extract (job rows)", "concurrency": "-", "items/s": None,
                        "tok/s": off_job["tok_s"], "p50 ms": None, "p99 ms": None, "vs offline": 1.0})
    print(machine_line())
    print(f"# embrm serve, {info['model']}, store on local disk; loopback clients in one Python process")
    print(table(results, ["what", "concurrency", "items/s", "tok/s", "p50 ms", "p99 ms", "vs offline", "mean batch",
                          "model busy"], floatfmt="{:,.2f}"))
    p = out["pull"]
    print(f"entry pull: {p['mb_s']:.0f} MB/s over loopback, np.load {p['np_load_mb_s']:.0f} MB/s "
          f"({p['vs_np_load']:.2f}x)")
    print(f"wrote {write_json(a.json, {'results': results, **out})}")


def _batch_ceiling(texts: list[str]) -> dict:
    """tok/s of the Embedder itself (no server) on the concurrency-32 items, 32 at a time
    (the most a forward call gets from 32 single-item clients) and all at once."""
    from embrm.extractor.embedder import Embedder, EmbeddingSpec

    emb = Embedder(EmbeddingSpec()).load()
    emb.embed([""], ["warm up"])
    res = {}
    for name, size in (("batch_32", 32), ("all_at_once", len(texts))):
        t, tok = time.perf_counter(), 0
        for i in range(0, len(texts), size):
            tok += emb.embed([""] * len(texts[i:i + size]), texts[i:i + size]).tokens
        res[name] = tok / (time.perf_counter() - t)
    return res


def _metrics(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url + "/metrics").read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{")[0].split(" ")[0]
            out[name] = out.get(name, 0.0) + float(line.split()[-1])
    return out


def _b64_first(res: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(res["data"][0]["embedding"]), "<f4")


def _pull(url: str, d: Path, rows: int = 100_000, dim: int = 576) -> dict:
    """Write a synthetic entry into the server's store, pull it, compare with np.load."""
    import pyarrow as pa

    from embrm.store import item_key, open_store
    from embrm.store.service import ServiceStore

    store = open_store(d / "store")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((rows, dim), dtype=np.float32)
    keys = [item_key("pull", str(i)) for i in range(rows)]
    recs = ({"position": i, "item_key": keys[i], "prompt_id": i, "response_index": 0, "role": "", "label": None,
             "reward": None, "prompt": "pull", "response": str(i)} for i in range(rows))
    mh, dh = "b" * 64, "c" * 64
    store.rows.write(dh, recs, rows)
    store.begin_entry(mh, "pull-model", {}, dh, "pull-data", {}, "pointwise", rows)
    for s in range(0, rows, 20_000):
        store.writer.write(mh, keys[s:s + 20_000], {-1: x[s:s + 20_000]}, np.ones(min(20_000, rows - s)),
                           np.zeros(min(20_000, rows - s), bool))
    store.finish_entry(mh, dh)
    np.save(d / "pull.npy", x)
    best_pull, best_np = np.inf, np.inf
    np.load(d / "pull.npy").fill(0)  # the first touch of fresh memory is paid untimed (it costs several times more)
    for _ in range(5):
        t = time.perf_counter()
        emb = ServiceStore(url).load(mh, dh)
        best_pull = min(best_pull, time.perf_counter() - t)
        t = time.perf_counter()
        np.load(d / "pull.npy")
        best_np = min(best_np, time.perf_counter() - t)
    assert np.array_equal(emb.vectors, x)
    mb = x.nbytes / 1e6
    del pa
    return {"rows": rows, "mb": mb, "seconds": best_pull, "mb_s": mb / best_pull, "rows_per_s": rows / best_pull,
            "np_load_mb_s": mb / best_np, "vs_np_load": best_np / best_pull}


def _job(url: str, d: Path, texts: list[dict]) -> dict:
    from embrm.extractor.plan import scan_dataset
    from embrm.store.service import ServiceStore

    data = d / "job.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in texts))
    scan = scan_dataset(DatasetSpec(str(data)))
    client = ServiceStore(url)
    client.upload(scan.rows(), scan.dataset_hash, scan.name, scan.kind)
    info = client.info()
    client.start_entry(scan.dataset_hash, scan.name, scan.kind, scan.source)
    while True:
        job = client.entry_status(info["model_hash"], scan.dataset_hash)["job"]
        if job["status"] != "running":
            break
        time.sleep(0.5)
    return {"rows": job["rows"], "tok_s": job["tokens"] / job["compute_seconds"], "seconds": job["seconds"],
            "status": job["status"]}


if __name__ == "__main__":
    main()
