"""Real ``embrm serve`` processes on loopback for tests, and a bounded HTTP client that
talks only to 127.0.0.1."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path


class Server:
    """A real `embrm serve` process on a free loopback port."""

    def __init__(self, model: Path, store: Path, *extra: str, env: dict[str, str] | None = None):
        self.store = store
        args = [sys.executable, "-m", "embrm.cli", "serve", "--model", str(model), "--dtype", "float32",
                "--device", "cpu", "--store", str(store), "--port", "0", "--commit-seconds", "0.2", *extra]
        logs = Path(store).parent if "://" not in str(store) else Path(tempfile.gettempdir())  # s3://...: no dir
        logs.mkdir(parents=True, exist_ok=True)
        fd, self.log_path = tempfile.mkstemp(prefix="serve-", suffix=".log", dir=logs)
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=fd, text=True,  # a file: a pipe nobody
                                     env={**os.environ, **(env or {})}, start_new_session=True)  # reads would fill
        os.close(fd)
        line = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("embrm serve:") or not line and self.proc.poll() is not None:
                break
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r} {self.log()[-2000:]}")
        self.url = f"http://127.0.0.1:{m.group(1)}"
        self.model_hash = None

    def log(self) -> str:
        """What the server wrote to stderr so far (its log)."""
        return Path(self.log_path).read_text(errors="replace")

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        return http("GET", self.url + path, None, headers)

    def post(self, path: str, payload: object, headers: dict[str, str] | None = None) -> tuple[int, object]:
        status, body, _ = http("POST", self.url + path, json.dumps(payload).encode(),
                                {"Content-Type": "application/json", **(headers or {})})
        return status, json.loads(body)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc.stdout.close()
        return self.proc.returncode


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
          ) -> tuple[int, bytes, dict[str, str]]:
    assert url.startswith("http://127.0.0.1:")
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read(), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, e.read(), {k.lower(): v for k, v in e.headers.items()}
