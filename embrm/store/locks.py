"""Commit locks: one writer at a time checks and inserts into a table of a local store.

``merge_insert`` on an unmarked key does not keep keys unique: two processes that both
planned an insert on the same version, each without some key, were seen to insert it
twice. So a local store serialises its check-and-insert commits with ``flock`` on a file
in ``<store>/_embrm_locks``; the kernel releases it when the holder dies, however it
dies, and the next writer goes on at once.

Object stores have no such lock, and need none: there every insert is a ``merge_insert``
on a key field that carries Lance's primary-key marker, and Lance's commit checks it
against every version committed since the insert was planned; a clash is retried on the
new version (``tests/test_s3.py`` runs two writers of the same items as real processes).
A writer that dies there holds nothing: its uncommitted data files are invisible, and
``embrm store gc`` removes them.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from embrm.store.tables import Tables, is_remote, local_path


@contextlib.contextmanager
def commit_lock(tables: Tables, name: str) -> Iterator[None]:
    """Hold the commit lock of table ``name`` of a local store (nothing on object stores)."""
    if is_remote(tables.uri):
        yield
        return
    import fcntl

    d = local_path(tables.uri) / "_embrm_locks"
    d.mkdir(exist_ok=True)
    with open(d / f"{name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
