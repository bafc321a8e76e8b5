"""``open_store``: a URI in, one of the three backends out (see :mod:`embrm.store.base`)."""
from __future__ import annotations

import os

from embrm.store.base import Store
from embrm.store.lance_store import LocalStore, ObjectStore
from embrm.store.location import OBJECT, SERVICE, locate
from embrm.store.service import ServiceStore


def open_store(uri: str | os.PathLike[str] | None = None, create: bool = False,
               storage_options: dict[str, str] | None = None, token: str | None = None) -> Store:
    """Open the store at ``uri`` (default ``$EMBRM_STORE`` or ``./embrm-store``).

    * a local path: with ``create=True`` a missing or empty directory becomes a new store;
    * ``s3://bucket/prefix`` (``gs://``, ``az://``): credentials and endpoint from the
      standard environment (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ...) or
      ``storage_options``; ``create`` as for a path;
    * ``http(s)://host:port``: an ``embrm serve`` process, with ``token`` (default
      ``$EMBRM_TOKEN``); ``create`` has no meaning there (the service made its store).

    A location that holds something other than an embrm store is refused either way, so
    embrm never writes into someone else's data.
    """
    loc = locate(uri)
    if loc.kind == SERVICE:
        return ServiceStore(loc.uri, token)
    if loc.kind == OBJECT:
        return ObjectStore.open(loc, create, storage_options)
    return LocalStore.open(loc, create)
