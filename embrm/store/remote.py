"""Object stores (``s3://bucket/prefix``): configuration from the standard AWS environment,
and their failures as one-line errors.

Lance reads ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION`` and
``AWS_ENDPOINT_URL`` itself. What it does not do, embrm adds here:

* a plain ``http://`` endpoint (a loopback server, MinIO on a LAN) needs ``allow_http``,
  which Lance never infers from the URL;
* retries and timeouts are bounded, so an unreachable endpoint fails in seconds rather
  than retrying for minutes (Lance also retries every listing six times, which cannot be
  configured);
* errors come back as one line that says what to fix. Credentials never appear in them,
  nor in the catalog, runs or logs: embrm never reads the secret itself.
"""
from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

from embrm.errors import EmbrmError
from embrm.store.tables import Tables

ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")
# Bounded: a refused connection fails in ~3 s, an endpoint that never answers in under a minute.
DEFAULTS = {"connect_timeout": "5s", "timeout": "60s", "client_max_retries": "2", "client_retry_timeout": "30"}


def endpoint() -> str | None:
    return next((os.environ[v] for v in ENDPOINT_VARS if os.environ.get(v)), None)


def storage_options(given: dict[str, str] | None = None) -> dict[str, str]:
    """Options for Lance on top of the environment it reads itself (given ones win)."""
    opts = dict(DEFAULTS)
    ep = (given or {}).get("aws_endpoint") or endpoint()
    if ep and ep.startswith("http://"):
        opts["allow_http"] = "true"
    opts.update({k: str(v) for k, v in (given or {}).items()})
    return opts


def remote_tables(uri: str, given: dict[str, str] | None = None) -> Tables:
    scheme = uri.split("://", 1)[0]
    if scheme not in ("s3", "s3a", "gs", "az", "abfs"):
        raise EmbrmError(f"store URI scheme {scheme}:// is not supported; use a local path, s3://bucket/prefix, "
                         "gs://..., az://... or http(s):// for an `embrm serve` service")
    return Tables(uri, storage_options(given) if scheme in ("s3", "s3a") else dict(given or {}))


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
    """The same configuration for pyarrow's S3 filesystem (listing a prefix in ``gc``)."""
    ep = opts.get("aws_endpoint") or endpoint()
    out: dict[str, Any] = {}  # credentials: the AWS SDK under pyarrow reads them from the environment itself
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        out["region"] = region
    if ep:
        u = urlparse(ep)
        out.update(endpoint_override=u.netloc or u.path, scheme=u.scheme or "https")
    return out
