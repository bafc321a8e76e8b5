"""Where a store lives, decided once from its URI.

Three kinds of place, three backends (:func:`embrm.store.backends.open_store`):

* **local disk**: a path (or ``file://`` URI);
* **object storage**: ``s3://``, ``gs://``, ``az://`` and their aliases;
* **the service**: ``http://`` or ``https://``, an ``embrm serve`` process.

This is the only module that looks at a store URI's scheme; everything else asks the
backend object it was given.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from embrm.errors import EmbrmError

DEFAULT_STORE = "./embrm-store"

LOCAL, OBJECT, SERVICE = "local disk", "object storage", "service"
OBJECT_SCHEMES = ("s3", "s3a", "gs", "az", "abfs")
SERVICE_SCHEMES = ("http", "https")


def default_store_uri() -> str:
    return os.environ.get("EMBRM_STORE") or DEFAULT_STORE


@dataclass(frozen=True)
class Location:
    """A parsed store URI: its kind (``LOCAL``, ``OBJECT`` or ``SERVICE``) and scheme."""

    uri: str
    kind: str
    scheme: str = ""

    @property
    def path(self) -> Path:
        """The directory of a local store."""
        if self.kind != LOCAL:
            raise EmbrmError(f"{self.uri} is on {self.kind}, not a local path")
        return Path(self.uri.removeprefix("file://"))


def locate(uri: str | os.PathLike[str] | None) -> Location:
    """Parse ``uri`` (default ``$EMBRM_STORE`` or ``./embrm-store``) into a :class:`Location`."""
    text = str(uri) if uri is not None else default_store_uri()
    if "://" not in text or text.startswith("file://"):
        return Location(text, LOCAL)
    scheme = text.split("://", 1)[0].lower()
    if scheme in OBJECT_SCHEMES:
        return Location(text.rstrip("/"), OBJECT, scheme)
    if scheme in SERVICE_SCHEMES:
        return Location(text.rstrip("/"), SERVICE, scheme)
    raise EmbrmError(f"store URI scheme {scheme}:// is not supported; use a local path, s3://bucket/prefix, "
                     "gs://..., az://... or http(s):// for an `embrm serve` service")
