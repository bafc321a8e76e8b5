"""Real processes for crash tests: start one, let it get some way, SIGKILL it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading


def kill_after(args: list[str], prefix: str, count: int, timeout: float = 300, **popen) -> list[str]:
    """Run ``python args...``, SIGKILL it once it has printed ``count`` lines starting with
    ``prefix``, and return what it printed. A process that ends first, or takes longer
    than ``timeout`` seconds, fails the test: a crash test must crash something."""
    p = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True, **popen)
    timer = threading.Timer(timeout, p.kill)  # bounds the loop below even if the process hangs
    timer.start()
    lines: list[str] = []
    seen = 0
    try:
        for line in p.stdout:
            lines.append(line)
            seen += line.startswith(prefix)
            if seen == count:
                os.kill(p.pid, signal.SIGKILL)
                break
    finally:
        timer.cancel()
        p.wait()
        p.stdout.close()
    assert seen == count and p.returncode == -signal.SIGKILL, (seen, p.returncode, lines[-5:])
    return lines
