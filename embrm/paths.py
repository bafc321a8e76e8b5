"""Output paths, checked before the work that fills them.

A command that trains for minutes and then fails to write its result wastes the
minutes; one that fails with a traceback wastes the user's time too. So every output
path is tried first: its directory exists or can be made, a file can be created there
(the only reliable test: ``/proc``, read-only mounts and full disks all pass
``os.access`` as root), and the target is of the right kind.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from embrm.errors import EmbrmError


def _try_write(d: Path, what: str) -> None:
    try:
        d.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise EmbrmError(f"cannot write {what}: {d} is a file, not a directory") from None
    except OSError as e:
        raise EmbrmError(f"cannot write {what}: cannot make the directory {d} ({e.strerror})") from None
    try:
        fd, name = tempfile.mkstemp(dir=d, prefix=".embrm-write-test-")
    except OSError as e:
        raise EmbrmError(f"cannot write {what}: {d} is not writable ({e.strerror})") from None
    os.close(fd)
    os.unlink(name)


def output_file(path: str | os.PathLike[str], force: bool = False, what: str = "the output") -> Path:
    """A file path that can be written now; an existing file only with ``force``."""
    p = Path(path)
    if p.is_dir():
        raise EmbrmError(f"cannot write {what} to {p}: it is a directory; give a file name")
    if p.exists() and not force:
        raise EmbrmError(f"{p} exists; pass --force to replace it, or give another file name")
    _try_write(p.parent if str(p.parent) else Path("."), f"{what} {p.name}")
    return p


def output_dir(path: str | os.PathLike[str], what: str = "the output") -> Path:
    """A directory that exists or can be made, and that a file can be written into."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise EmbrmError(f"cannot write {what} to {p}: it is a file, not a directory")
    _try_write(p, what)
    return p
