"""Commit locks: one writer at a time checks and inserts into a table.

``merge_insert`` alone does not keep keys unique: two processes that both plan an insert
on the same version, each without some key, were seen to insert it twice. Under a lock,
each insert is planned on the table's latest version.

* Local stores use ``flock`` on a file in ``<store>/_embrm_locks``; the kernel releases
  it when the holder dies, however it dies.
* Object stores get a lease: see :mod:`embrm.store.lease`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from embrm.store.tables import Tables, is_remote, local_path


@contextlib.contextmanager
def commit_lock(tables: Tables, name: str) -> Iterator[None]:
    """Hold the commit lock of table ``name`` of the store."""
    if is_remote(tables.uri):
        from embrm.store.lease import lease

        with lease(tables, name):
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
