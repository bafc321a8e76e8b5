"""What hostile or careless load costs the service and the extractor, side by side in one run.

* **memory**: a real ``embrm serve`` (the packaged SmolLM2-135M-Instruct) takes 8 concurrent
  maximum-size requests (one 30 MB text each, under the 32 MB body limit) and then 4
  concurrent maximum-size dataset uploads (``--max-upload-bytes``); its resident memory
  idle, at its peak, and after each (target: under 2x idle after both);
* **a small request behind a large one**: the latency of a one-sentence request sent just
  after a 30 MB one, against the same request alone and the 30 MB one alone (the large
  text is cut to ``max_length`` tokens before tokenising, so the small one waits at most
  for that one forward pass);
* **concurrent extractions**: three ``embrm extract`` processes on the same HH-RLHF pairs
  into one store, against one process alone (target: at most 1.5x its wall time, every
  item stored once);
* **the RM upload route** (``PUT /v1/rms/{name}``), on a fresh server of its own (its peak
  is its own): 4 concurrent chunked pushes of a valid 200 MB run under a 256 MB
  ``--max-upload-bytes`` (streamed to disk, then checked and written one at a time), and
  4 concurrent chunked 400 MB junk bodies against the same limit (413 at the limit);
  resident memory idle, peak and after (target: peak under 2x idle).

Prints a table and writes JSON. Needs ../shared/data/hh-rlhf for the texts.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow as pa

from embrm.extractor.datasets import DatasetSpec, iter_rows
from embrm.store import open_store
from embrm.store import schema as S

from _common import machine_line, table, write_json
from bench_serve import HH, post, start_server


def rss(pid: int, field: str = "VmRSS") -> int:
    return int(Path(f"/proc/{pid}/status").read_text().split(f"{field}:")[1].split()[0]) >> 10  # MB


def raw(url: str, body: bytes, ctype: str) -> int:
    req = urllib.request.Request(url, body, {"Content-Type": ctype}, method="PUT" if "datasets" in url else "POST")
    with urllib.request.urlopen(req, timeout=1800) as r:
        r.read()
        return r.status


def together(calls: list[tuple]) -> float:
    """Run ``raw(*args)`` for each of ``calls`` in its own thread; the wall seconds."""
    threads = [threading.Thread(target=raw, args=args) for args in calls]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t


def memory(d: Path, upload_mb: int) -> dict:
    proc, url = start_server(d / "store", "--max-upload-bytes", str(upload_mb << 20))
    try:
        post(url + "/v1/embeddings", {"input": "warm up"})
        out = {"idle_mb": rss(proc.pid)}
        big = json.dumps({"input": "word " * (6 << 20)}).encode()
        out["requests_s"] = together([(url + "/v1/embeddings", big, "application/json")] * 8)
        time.sleep(3)  # the committer writes what was computed, then the buffers are free
        out["after_requests_mb"] = rss(proc.pid)
        row = {"prompt": "p" * 1000, "response": "r" * 1000, "prompt_id": 0, "response_index": 0, "role": "",
               "label": None, "reward": None}
        n = ((upload_mb - 4) << 20) // 2100
        sink = pa.BufferOutputStream()
        t_ = pa.Table.from_pylist([{**row, "prompt_id": i, "response": f"{i}" + "r" * 995} for i in range(n)],
                                  schema=S.UPLOAD_SCHEMA)
        with pa.ipc.new_stream(sink, t_.schema) as w:
            w.write_table(t_, max_chunksize=8192)
        body = sink.getvalue().to_pybytes()
        out["upload_mb"] = len(body) >> 20
        out["uploads_s"] = together([(f"{url}/v1/datasets?kind=pointwise&name=big-{i}", body,
                                      "application/vnd.apache.arrow.stream") for i in range(4)])
        out["after_uploads_mb"] = rss(proc.pid)
        out["peak_mb"] = rss(proc.pid, "VmHWM")
        # a small request behind a large one
        small = {"input": "How are you today?"}
        alone = []
        for i in range(3):
            t = time.perf_counter()
            post(url + "/v1/embeddings", {"input": f"How are you today, {i}?"})
            alone.append(time.perf_counter() - t)
        large = []  # what the small one waits for: the large one's forward pass (max_length tokens)
        for i in range(3):
            t = time.perf_counter()
            raw(url + "/v1/embeddings", json.dumps({"input": f"alone {i} " + "word " * (6 << 20)}).encode(),
                "application/json")
            large.append(time.perf_counter() - t)
        behind = []
        for i in range(3):
            th = threading.Thread(target=raw, args=(url + "/v1/embeddings",
                                                    json.dumps({"input": f"{i} " + "word " * (6 << 20)}).encode(),
                                                    "application/json"))
            th.start()
            time.sleep(0.5)  # the large body is sent and parsed meanwhile
            t = time.perf_counter()
            post(url + "/v1/embeddings", {**small, "input": f"How are you, {i}?"})
            behind.append(time.perf_counter() - t)
            th.join()
        out["small_alone_s"], out["small_behind_large_s"], out["large_alone_s"] = alone, behind, large
        return out
    finally:
        proc.terminate()
        proc.wait(60)


def chunked_put(url: str, body: bytes | None, size: int, piece: int = 1 << 20) -> tuple[int, int]:
    """PUT ``body`` (or ``size`` junk bytes) chunked, no Content-Length; (status, bytes sent)."""
    sent = [0]

    def pieces():
        view = memoryview(body) if body is not None else None
        while sent[0] < size:
            chunk = view[sent[0]:sent[0] + piece] if view is not None else b"\xff" * min(piece, size - sent[0])
            sent[0] += len(chunk)
            yield chunk

    req = urllib.request.Request(url, pieces(), {"Content-Type": "application/vnd.apache.arrow.stream"}, method="PUT")
    try:
        with urllib.request.urlopen(req, timeout=1800) as r:
            r.read()
            return r.status, sent[0]
    except urllib.error.HTTPError as e:
        return e.code, sent[0]
    except OSError:  # the server answered 413 and closed while we were still sending
        return 413, sent[0]


def big_run(dim: int, info: dict, mb: int) -> bytes:
    """A valid bt run of about ``mb`` MB for the served embedding, as the push route's body."""
    import numpy as np
    from safetensors.numpy import save

    from embrm.store.wire import run_files_ipc

    hidden = (mb << 20) // (4 * (dim + 2))
    rng = np.random.default_rng(0)
    w = {"w0": (rng.standard_normal((1, dim, hidden), np.float32) / 30), "b0": np.zeros((1, 1, hidden), np.float32),
         "w1": rng.standard_normal((1, hidden, 1), np.float32) / 300, "b1": np.zeros((1, 1, 1), np.float32)}
    cfg = {"run_format": 2, "embrm_version": "bench", "dim": dim, "model_hash": info["model_hash"],
           "layer": info["layers"][0], "train": {"method": "bt", "ensemble": 1, "hidden": [hidden]}}
    return run_files_ipc({"config.json": json.dumps(cfg).encode(), "weights.safetensors": save(w)})


def rm_uploads(d: Path, limit_mb: int, run_mb: int = 200) -> dict:
    proc, url = start_server(d / "store", "--max-upload-bytes", str(limit_mb << 20))
    try:
        with urllib.request.urlopen(url + "/v1/info", timeout=60) as r:
            info = json.loads(r.read())
        body = big_run(info["dim"], info, run_mb)
        out = {"idle_mb": rss(proc.pid), "run_mb": len(body) >> 20, "limit_mb": limit_mb,
               "load_average_before": os.getloadavg()[0]}
        results: list = []

        def push(i: int, data: bytes | None, size: int, kind: str) -> None:
            results.append((kind, *chunked_put(f"{url}/v1/rms/{kind}-{i}", data, size)))

        t = time.perf_counter()
        threads = [threading.Thread(target=push, args=(i, body, len(body), "run")) for i in range(4)]
        threads += [threading.Thread(target=push, args=(i, None, 400 << 20, "junk")) for i in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        out["seconds"] = time.perf_counter() - t
        out["statuses"] = sorted((k, s) for k, s, _ in results)
        out["junk_sent_mb"] = sorted(n >> 20 for k, _, n in results if k == "junk")
        time.sleep(2)
        out["after_mb"], out["peak_mb"] = rss(proc.pid), rss(proc.pid, "VmHWM")
        out["load_average_after"] = os.getloadavg()[0]  # the machine is shared: timings vary with it
        return out
    finally:
        proc.terminate()
        proc.wait(60)


def concurrent(d: Path, pairs: int) -> dict:
    rows = list(iter_rows(DatasetSpec(str(HH), limit=pairs)))
    d.mkdir(parents=True, exist_ok=True)
    data = d / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": c["prompt"], "chosen": c["response"], "rejected": r["response"]})
                            + "\n" for c, r in zip(rows[0::2], rows[1::2])))
    args = [sys.executable, "-m", "embrm.cli", "extract", "--dataset", str(data), "--quiet", "--window", "64"]
    t = time.perf_counter()
    subprocess.run([*args, "--store", str(d / "one")], check=True, capture_output=True)
    one = time.perf_counter() - t
    open_store(d / "three", create=True)
    t = time.perf_counter()
    procs = [subprocess.Popen([*args, "--store", str(d / "three")], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate()[0] for p in procs]
    three = time.perf_counter() - t
    computed = [int(o.split("computed ")[1].split()[0]) for o in outs]
    st = open_store(d / "three")
    keys = st.vectors.cached(st.entries()[0].model_hash).to_pylist()
    return {"items": len(rows), "one_s": one, "three_s": three, "ratio": three / one, "computed": computed,
            "stored": len(keys), "duplicates": len(keys) - len(set(keys))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upload-mb", type=int, default=256, help="--max-upload-bytes of the server, in MB")
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--json", default="hardening.json")
    ap.add_argument("--only", choices=["all", "rm"], default="all", help="rm: only the RM upload route")
    a = ap.parse_args()
    if not HH.exists():
        raise SystemExit(f"needs {HH}")
    with tempfile.TemporaryDirectory() as d:
        rm = rm_uploads(Path(d) / "rm", a.upload_mb)
        if a.only == "rm":
            print(machine_line())
            print(table(rm_rows(rm), ["what", "value", "target"]))
            write_json(a.json, {"rm_upload": rm})
            return
        mem = memory(Path(d) / "mem", a.upload_mb)
        con = concurrent(Path(d) / "con", a.pairs)
    rows = [*rm_rows(rm),
        {"what": "server RSS idle", "value": f"{mem['idle_mb']} MB", "target": ""},
        {"what": "after 8 concurrent 30 MB requests", "value": f"{mem['after_requests_mb']} MB "
         f"({mem['after_requests_mb'] / mem['idle_mb']:.2f}x idle)", "target": "< 2x idle"},
        {"what": f"after 4 concurrent {mem['upload_mb']} MB uploads", "value": f"{mem['after_uploads_mb']} MB "
         f"({mem['after_uploads_mb'] / mem['idle_mb']:.2f}x idle)", "target": "< 2x idle"},
        {"what": "peak during both", "value": f"{mem['peak_mb']} MB ({mem['peak_mb'] / mem['idle_mb']:.2f}x idle)",
         "target": ""},
        {"what": "small request alone (median of 3)", "value": f"{sorted(mem['small_alone_s'])[1]:.3f} s",
         "target": ""},
        {"what": "a 30 MB request alone (median of 3)", "value": f"{sorted(mem['large_alone_s'])[1]:.3f} s",
         "target": ""},
        {"what": "small request sent 0.5 s after a 30 MB one",
         "value": f"{sorted(mem['small_behind_large_s'])[1]:.3f} s",
         "target": "<= the 30 MB one alone"},
        {"what": f"1 extraction of {con['items']} HH items", "value": f"{con['one_s']:.1f} s", "target": ""},
        {"what": "3 concurrent extractions, same items, one store",
         "value": f"{con['three_s']:.1f} s ({con['ratio']:.2f}x); computed {con['computed']}, "
                  f"{con['duplicates']} duplicates", "target": "<= 1.5x, 0 duplicates"},
    ]
    print(machine_line())
    print(table(rows, ["what", "value", "target"]))
    write_json(a.json, {"memory": mem, "concurrent": con, "rm_upload": rm})


def rm_rows(rm: dict) -> list[dict]:
    return [
        {"what": "RM route: server RSS idle (fresh server)", "value": f"{rm['idle_mb']} MB", "target": ""},
        {"what": f"4 chunked {rm['run_mb']} MB runs + 4 chunked 400 MB junk bodies, limit {rm['limit_mb']} MB",
         "value": f"peak {rm['peak_mb']} MB ({rm['peak_mb'] / rm['idle_mb']:.2f}x idle), after {rm['after_mb']} MB, "
                  f"{rm['seconds']:.0f} s", "target": "peak < 2x idle"},
        {"what": "answers", "value": ", ".join(f"{k} {s}" for k, s in rm["statuses"]), "target": "run 201, junk 413"},
        {"what": "junk bytes sent before the 413", "value": f"{rm['junk_sent_mb']} MB",
         "target": f"about {rm['limit_mb']} MB"},
        {"what": "load average (1 min) before, after", "value": f"{rm.get('load_average_before', 0):.1f}, "
         f"{rm.get('load_average_after', 0):.1f}", "target": "(a shared machine)"},
    ]


if __name__ == "__main__":
    main()
