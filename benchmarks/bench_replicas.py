"""Replicas of ``embrm serve`` on one store behind HAProxy (docs/replicas.md).

Measures, in one run:

* **cached-lookup throughput**, 1 replica against 2, each replica pinned to a core of
  its own with ``taskset`` (one torch thread each): two HAProxy front ends, one over
  replica 0 alone and one over both, measured in alternating rounds; vectors/s of
  256-item hit requests (base64) from client threads;
* **staleness**: over ``--commits`` items, the time from replica A's answer for a new item
  (its vector waits up to ``--commit-seconds`` in A's buffer) to the first hit for it on
  replica B (polled every 10 ms): median and max;
* **job takeover**: for each lease length, a dataset job runs on A, A is SIGKILLed, and the
  time until B reports the job as its own.

The clients, HAProxy and the replicas share the machine: run it where nothing else
runs, or read its ratios with the load average it prints. Needs ``haproxy``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import machine_line, table, write_json  # noqa: E402
from replicas import HAProxy, dataset, start_job, wait_for  # noqa: E402
from s3server import free_port  # noqa: E402
from servers import http  # noqa: E402


class Replica:
    """An ``embrm serve`` process, optionally pinned to one core."""

    def __init__(self, store: Path, port: int, core: int | None, *extra: str, model: list[str]):
        pin = ["taskset", "-c", str(core)] if core is not None else []
        env = {**os.environ, **({"OMP_NUM_THREADS": "1"} if core is not None else {})}
        args = [*pin, sys.executable, "-m", "embrm.cli", "serve", *model, "--store", str(store), "--port", str(port),
                *extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                                     start_new_session=True)
        print(f"# started replica on core {core}" if core is not None else "# started replica", file=sys.stderr)
        line = self.proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not m:
            self.proc.kill()
            raise SystemExit(f"server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{m.group(1)}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(60)


def post(url: str, payload: dict) -> dict:
    status, body, _ = http("POST", url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    assert status == 200, body[:300]
    return json.loads(body)


def throughput(url: str, texts: list[str], seconds: float, clients: int) -> float:
    """Vectors/s of hit requests of 256 items for ``seconds`` from ``clients`` threads."""
    done = [0] * clients
    end = time.monotonic() + seconds

    def run(c: int) -> None:
        i = c
        while time.monotonic() < end:
            batch = [texts[(i * 256 + j) % len(texts)] for j in range(256)]
            post(url + "/v1/embeddings", {"input": batch, "encoding_format": "base64"})
            done[c] += 256
            i += clients

    t0 = time.monotonic()
    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - t0)


def bench_throughput(d: Path, model: list[str], rounds: int, seconds: float, clients: int) -> dict:
    ports = [free_port(), free_port()]
    reps = [Replica(d / "store", ports[i], i, model=model) for i in range(2)]
    lbs = {1: HAProxy(d / "lb1", ports[:1], free_port()), 2: HAProxy(d / "lb2", ports, free_port())}
    try:
        texts = [f"cached text {i}" for i in range(512)]
        for r in reps:  # computed once by replica 0; replica 1 reads them from the store; both keep them hot
            for i in range(0, len(texts), 256):
                post(r.url + "/v1/embeddings", {"input": texts[i:i + 256]})
        for lb in lbs.values():
            wait_for(lambda lb=lb: http("GET", lb.url + "/health")[0] == 200, 30)
        got: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(rounds):
            for n, lb in lbs.items():
                got[n].append(throughput(lb.url, texts, seconds, clients))
    finally:
        for lb in lbs.values():
            lb.stop()
        for r in reps:
            r.stop()
    med = {n: statistics.median(v) for n, v in got.items()}
    return {"vectors_per_s_1": med[1], "vectors_per_s_2": med[2], "ratio": med[2] / med[1], "rounds": got}


def bench_staleness(d: Path, model: list[str], commits: int, commit_seconds: float) -> dict:
    args = ("--commit-seconds", str(commit_seconds))
    a = Replica(d / "store-st", 0, None, *args, model=model)
    b = Replica(d / "store-st", 0, None, *args, model=model)
    from embrm.store import item_key

    lags = []
    try:
        for i in range(commits):
            text = f"staleness probe {i} {time.time()}"
            post(a.url + "/v1/embeddings", {"input": text})
            t0, key = time.monotonic(), item_key("", text)
            wait_for(lambda k=key: post(b.url + "/v1/embed", {"item_keys": [k]})["items"][0]["found"], 30, 0.01)
            lags.append(time.monotonic() - t0)
    finally:
        a.stop()
        b.stop()
    return {"commits": commits, "commit_seconds": commit_seconds, "median_s": statistics.median(lags),
            "max_s": max(lags)}


def bench_takeover(d: Path, model: list[str], leases: list[float], refresh: float) -> list[dict]:
    out = []
    for lease in leases:
        store = d / f"store-lease-{lease:g}"
        args = ("--lease-seconds", str(lease), "--refresh-seconds", str(refresh), "--window", "16")
        a = Replica(store, 0, None, *args, "--replica-id", "A", model=model)
        b = Replica(store, 0, None, *args, "--replica-id", "B", model=model)
        try:
            scan = dataset(d / f"job-{lease:g}.jsonl", 160)
            start_job(a.url, scan)

            def jobs(url: str) -> list[dict]:
                return json.loads(http("GET", url + "/v1/jobs")[1])["data"]

            wait_for(lambda: any(j["done_rows"] >= 16 for j in jobs(b.url)), 120)
            a.stop(signal.SIGKILL)
            t0 = time.monotonic()
            wait_for(lambda: any(j["owner"] == "B" for j in jobs(b.url)), 10 * lease + 30, 0.05)
            took = time.monotonic() - t0  # (tests/test_replicas.py checks the job then finishes whole)
        finally:
            a.stop(signal.SIGKILL)
            b.stop()
        out.append({"lease_s": lease, "refresh_s": refresh, "takeover_s": took,
                    "bound_s": lease + refresh})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model to serve (default: the packaged SmolLM2-135M-Instruct)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0, help="seconds of load per round and front end")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--commits", type=int, default=200)
    ap.add_argument("--commit-seconds", type=float, default=0.2)
    ap.add_argument("--leases", default="2,5")
    ap.add_argument("--parts", default="throughput,staleness,takeover", help="which measurements to run")
    ap.add_argument("--json", default="replicas.json")
    a = ap.parse_args()
    if shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists():
        raise SystemExit("needs HAProxy: apt-get install -y haproxy")
    model = ["--model", a.model] if a.model else []
    print(machine_line(), flush=True)
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        d = Path(tmp)
        for sub in ("lb1", "lb2"):
            (d / sub).mkdir()
        parts, thr, st, tk = set(a.parts.split(",")), None, None, None
        if "throughput" in parts:
            thr = bench_throughput(d, model, a.rounds, a.seconds, a.clients)
            print("\ncached lookups through HAProxy, each replica pinned to one core (median of rounds)")
            print(table([{"replicas": 1, "vectors_per_s": thr["vectors_per_s_1"]},
                         {"replicas": 2, "vectors_per_s": thr["vectors_per_s_2"]}], floatfmt="{:,.0f}"))
            print(f"ratio 2/1: {thr['ratio']:.2f}x (target >= 1.6x)", flush=True)
        if "staleness" in parts:
            st = bench_staleness(d, model, a.commits, a.commit_seconds)
            print(f"\nstaleness over {st['commits']} commits (--commit-seconds {st['commit_seconds']:g}): "
                  f"median {st['median_s']:.3f} s, max {st['max_s']:.3f} s", flush=True)
        if "takeover" in parts:
            tk = bench_takeover(d, model, [float(x) for x in a.leases.split(",")], 0.5)
            print("\njob takeover after a SIGKILL")
            print(table(tk))
    load1 = os.getloadavg()
    print(f"\n# load average before {load0[0]:.1f}, after {load1[0]:.1f} (a shared machine when these are above ~1)")
    path = write_json(a.json, {"throughput": thr, "staleness": st, "takeover": tk,
                               "load_before": load0, "load_after": load1})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
