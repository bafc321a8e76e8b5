"""Several extractions on one machine: share the work, share the cores.

Three ``embrm extract`` processes started on the same data used to compute every item
three times (the store kept one copy, but the forward passes were tripled) and ran two
torch thread pools per core. Two things fix that, both kept on this machine's temporary
directory (so they work whatever the store, and cost nothing when one process runs):

* :class:`WindowClaims`: before a window of rows is computed, its process takes a
  non-blocking ``flock`` on a file named by (store, model, dataset, window). A window
  another process holds is put off; when everything else is done, the process waits for
  each put-off window and checks its keys against the store again, so what the other
  process committed is skipped. The kernel releases a dead holder's claim.
* :class:`CoreShare`: each process holds a lock on a file of its own in one folder; the
  live ones are counted before each window, and torch gets ``cores // N`` threads.

Processes on different machines share only the store: each window's keys are checked
against the store before it is computed, so one commits what another then skips.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _root() -> Path:
    d = Path(tempfile.gettempdir()) / f"embrm-{os.getuid()}"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


class WindowClaims:
    """Claims on the windows of one (store, model, dataset) extraction."""

    def __init__(self, store_uri: str, model_hash: str, dataset_hash: str, root: Path | None = None):
        tag = hashlib.sha256(f"{store_uri}\0{model_hash}\0{dataset_hash}".encode()).hexdigest()[:24]
        self.dir = (root or _root()) / "claims"
        self.dir.mkdir(exist_ok=True)
        self.prefix = tag

    @contextlib.contextmanager
    def claim(self, window: int, wait: bool) -> Iterator[bool]:
        """Yields whether this process holds window ``window`` (with ``wait``, always, once
        any other holder is done)."""
        path = self.dir / f"{self.prefix}-{window}"
        with open(path, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                with contextlib.suppress(OSError):
                    path.unlink()  # a later claimant of the old file finds its keys stored
                fcntl.flock(f, fcntl.LOCK_UN)


class CoreShare:
    """This process's share of the machine's cores among live extractions."""

    def __init__(self, root: Path | None = None, cores: int | None = None):
        self.dir = (root or _root()) / "active"
        self.dir.mkdir(exist_ok=True)
        self.cores = cores or os.cpu_count() or 1
        self._file: IO[str] | None = None

    def __enter__(self) -> CoreShare:
        self._file = open(self.dir / str(os.getpid()), "a")
        fcntl.flock(self._file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._file.name)
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def live(self) -> int:
        """Extractions running now (files whose lock is held; a dead holder's file goes)."""
        n = 0
        for p in self.dir.iterdir():
            try:
                with open(p, "a") as f:
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        n += 1
                        continue
                    if self._file is None or p.name != Path(self._file.name).name:
                        with contextlib.suppress(OSError):
                            p.unlink()
                    fcntl.flock(f, fcntl.LOCK_UN)
            except OSError:
                continue
        return max(1, n)

    def threads(self) -> int:
        """Torch threads for this process: the cores divided among live extractions."""
        return max(1, self.cores // self.live())
