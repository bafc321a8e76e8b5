"""Helpers for the replica tests and benchmarks/bench_replicas.py: a dataset uploaded and
started through a replica, job polling, a trained reward-model run, and HAProxy on loopback."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from servers import Server

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)


def wait_for(pred: Any, timeout: float, step: float = 0.1) -> Any:
    """Poll ``pred`` until it returns something truthy (returned), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = pred()
        except OSError:  # not listening yet
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(step)


def model_hash(s: Server) -> str:
    if s.model_hash is None:
        s.model_hash = json.loads(s.get("/v1/info")[1])["model_hash"]
    return s.model_hash


def dataset(path: Path, n: int) -> Any:
    """A pointwise dataset of ``n`` rows, scanned as ``embrm extract`` scans it."""
    from embrm.extractor.datasets import DatasetSpec
    from embrm.extractor.plan import scan_dataset

    recs = [{"prompt": f"Question {i % 40}?", "response": f" answer number {i} " * (1 + i % 3)} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return scan_dataset(DatasetSpec(str(path)))


def start_job(url: str, scan: Any) -> dict[str, Any]:
    """Upload ``scan``'s rows through the replica at ``url`` and start its dataset job."""
    from embrm.store.service import ServiceStore

    client = ServiceStore(url)
    client.upload(scan.rows(), scan.dataset_hash, scan.name, scan.kind)
    return client.start_entry(scan.dataset_hash, scan.name, scan.kind, scan.source)


def jobs(s: Server) -> list[dict[str, Any]]:
    status, body, _ = s.get("/v1/jobs")
    assert status == 200, body
    return json.loads(body)["data"]


def train_run(tmp: Path, model: Path) -> Path:
    """A small linear reward model trained on the tiny model's vectors (a run directory)."""
    from click.testing import CliRunner

    from embrm.cli import main as cli

    recs = [{"prompt": f"Q{i}?", "responses": [f" good {i}", f" bad {i}"], "rewards": [1.0, -1.0]} for i in range(16)]
    data = tmp / "rm.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    r = CliRunner()
    res = r.invoke(cli, ["extract", "--dataset", str(data), "--model", str(model), "--dtype", "float32",
                         "--store", str(tmp / "rm-store"), "--quiet"])
    assert res.exit_code == 0, res.output
    from embrm.store import open_store

    [entry] = open_store(tmp / "rm-store").entries()
    res = r.invoke(cli, ["train", "--model-key", entry.model_hash, "--dataset-key", "rm", "--method", "linear",
                         "--ensemble", "2", "--epochs", "2",
                         "--out", str(tmp / "run"), "--store", str(tmp / "rm-store")])
    assert res.exit_code == 0, res.output
    return tmp / "run"


class HAProxy:
    """HAProxy from Debian's package on a loopback port, in front of ``backends`` (ports).

    Health checks ask ``GET /health`` every 200 ms. A request that fails to connect, or
    whose connection closes before any response (a replica that stopped listening, or
    died), is retried on another replica (``retry-on``); one whose replica died after
    the response began is not, and fails (a 502 for the client)."""

    def __init__(self, tmp: Path, backends: list[int], port: int):
        assert HAPROXY is not None
        self.port, self.url = port, f"http://127.0.0.1:{port}"
        lines = ["global", "  maxconn 512", "defaults", "  mode http", "  timeout connect 2s", "  timeout client 60s",
                 "  timeout server 60s", "  timeout check 3s", "  retries 3", "  option redispatch 1",
                 "  retry-on conn-failure empty-response response-timeout", "  option http-server-close",
                 "frontend fe", f"  bind 127.0.0.1:{port}", "  default_backend replicas", "backend replicas",
                 "  balance roundrobin", "  option httpchk GET /health", "  http-check expect status 200",
                 "  http-response set-header X-Replica %[srv_name]"]
        lines += [f"  server r{i} 127.0.0.1:{p} check inter 200ms fall 2 rise 1" for i, p in enumerate(backends)]
        self.cfg = tmp / "haproxy.cfg"
        self.cfg.write_text("\n".join(lines) + "\n")
        self.log = open(tmp / "haproxy.log", "w")
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(self.cfg)], stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()
