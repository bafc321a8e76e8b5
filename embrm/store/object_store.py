"""Object stores (``s3://bucket/prefix``): their tables, configuration from the standard
AWS environment, and their failures as one-line errors.

Lance reads ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION`` and
``AWS_ENDPOINT_URL`` itself. What it does not do, embrm adds here:

* a plain ``http://`` endpoint (a loopback server, MinIO on a LAN) needs ``allow_http``,
  which Lance never infers from the URL;
* retries and timeouts are bounded, so an unreachable endpoint fails in seconds rather
  than retrying for minutes (Lance also retries every listing six times, which cannot be
  configured);
* errors come back as one line that says what to fix. Credentials never appear in them,
  nor in the catalog, runs or logs: embrm never reads the secret itself.

Writers on object storage take no lock (see :mod:`embrm.store.tables`): a writer that
dies holds nothing, its uncommitted data files are invisible, and ``embrm store gc``
removes them.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

from embrm.errors import EmbrmError
from embrm.store.tables import SUFFIX, Tables

ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")
S3_SCHEMES = ("s3", "s3a")
# Bounded: a refused connection fails in ~3 s, an endpoint that never answers in under a minute.
DEFAULTS = {"connect_timeout": "5s", "timeout": "60s", "client_max_retries": "2", "client_retry_timeout": "30"}


def endpoint() -> str | None:
    return next((os.environ[v] for v in ENDPOINT_VARS if os.environ.get(v)), None)


def storage_options(scheme: str, given: dict[str, str] | None = None) -> dict[str, str]:
    """Options for Lance on top of the environment it reads itself (given ones win)."""
    if scheme not in S3_SCHEMES:
        return dict(given or {})
    opts = dict(DEFAULTS)
    ep = (given or {}).get("aws_endpoint") or endpoint()
    if ep and ep.startswith("http://"):
        opts["allow_http"] = "true"
    opts.update({k: str(v) for k, v in (given or {}).items()})
    return opts


class ObjectTables(Tables):
    """Tables under an object-store prefix: listing through pyarrow's file system, no lock."""

    def names(self) -> set[str]:
        import pyarrow.fs as pafs

        fs, base = self._fs()
        try:
            infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        except OSError as e:
            self.explain(e)
            raise
        return {i.base_name[: -len(SUFFIX)] for i in infos
                if i.type == pafs.FileType.Directory and i.base_name.endswith(SUFFIX)}

    def drop(self, name: str) -> None:
        import lance

        lance.LanceDataset.drop(self.path(name), storage_options=self.lance_options, ignore_not_found=True)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        yield  # Lance's primary-key conflict check stands in for a lock here

    def explain(self, e: BaseException) -> None:
        err = explain(e, self.uri)
        if err is not None:
            raise err from None

    def _fs(self) -> tuple[Any, str]:
        """A pyarrow filesystem for listing the prefix with the store's options."""
        import pyarrow.fs as pafs

        scheme, _, rest = self.uri.partition("://")
        if scheme not in S3_SCHEMES:
            return pafs.FileSystem.from_uri(self.uri)
        return pafs.S3FileSystem(**pyarrow_s3_options(self.storage_options)), rest


def explain(e: BaseException, uri: str) -> EmbrmError | None:
    """A one-line error for a failure of the object store, or None if it is something else."""
    msg = str(e)
    bucket = urlparse(uri).netloc
    ep = endpoint() or "the default AWS endpoint"
    if "NoSuchBucket" in msg:
        return EmbrmError(f"bucket {bucket!r} does not exist at {ep}; create it, or fix the store URI {uri}")
    if any(s in msg for s in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "403 Forbidden", "AccessDenied",
                              "ExpiredToken")):
        return EmbrmError(f"the object store at {ep} refused the credentials for {uri}; check AWS_ACCESS_KEY_ID "
                          "and AWS_SECRET_ACCESS_KEY")
    if "CredentialsNotLoaded" in msg or "Failed to get AWS credentials" in msg:
        return EmbrmError(f"no credentials for {uri}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if any(s in msg for s in ("ConnectionRefused", "tcp connect error", "error sending request", "Timeout",
                              "timed out", "dns error", "BadScheme", "builder error")):
        hint = " (a plain http:// endpoint is allowed; check the address)" if ep.startswith("http://") else ""
        return EmbrmError(f"cannot reach the object store at {ep} for {uri}{hint}; check AWS_ENDPOINT_URL and "
                          "that the server is up")
    return None


def pyarrow_s3_options(opts: dict[str, Any]) -> dict[str, Any]:
    """The same configuration for pyarrow's S3 filesystem (listing a prefix)."""
    ep = opts.get("aws_endpoint") or endpoint()
    out: dict[str, Any] = {}  # credentials: the AWS SDK under pyarrow reads them from the environment itself
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        out["region"] = region
    if ep:
        u = urlparse(ep)
        out.update(endpoint_override=u.netloc or u.path, scheme=u.scheme or "https")
    return out
