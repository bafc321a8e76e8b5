"""Object stores: storage options for Lance from the standard AWS environment. (Placeholder.)"""
from __future__ import annotations

from embrm.store.tables import Tables


def remote_tables(uri: str, storage_options: dict[str, str] | None) -> Tables:
    return Tables(uri, storage_options)


def pyarrow_s3_options(opts: dict[str, str]) -> dict:
    return {}
