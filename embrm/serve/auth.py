"""Bearer tokens: who may use the service.

Tokens come from ``--token-file`` (lines of ``name:token``; blank lines and ``#``
comments skipped) or ``$EMBRM_TOKEN`` (one token, named ``env``, a name the file may not
use; a name the file repeats is an error too, rather than the last line silently
winning). Every token is compared with :func:`hmac.compare_digest`, all of them every
time, so the time taken says nothing about which one nearly matched. The ``Bearer``
scheme is matched without regard to case (RFC 7235). Logs name the token, never the
token itself.
"""
from __future__ import annotations

import hmac
import os
import re
from pathlib import Path

from embrm.errors import EmbrmError

LOOPBACK = ("127.0.0.1", "::1", "localhost")
ENV_NAME = "env"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def load_tokens(token_file: str | None) -> dict[str, str]:
    """``{name: token}`` from the file and the environment; empty means auth is off."""
    tokens: dict[str, str] = {}
    if token_file:
        p = Path(token_file)
        if not p.is_file():
            raise EmbrmError(f"--token-file {token_file} does not exist")
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, token = line.partition(":")
            name, token = name.strip(), token.strip()
            if not sep or not name or len(token) < 16:
                raise EmbrmError(f"{p.name} line {n}: write name:token with a token of at least 16 characters")
            if not NAME.fullmatch(name):
                raise EmbrmError(f"{p.name} line {n}: a token's name is 1-64 letters, digits, '.', '_' or '-'")
            if name == ENV_NAME:
                raise EmbrmError(f"{p.name} line {n}: the name {ENV_NAME!r} is reserved for $EMBRM_TOKEN; "
                                 "name this token otherwise")
            if name in tokens:
                raise EmbrmError(f"{p.name} line {n}: the name {name!r} is given twice; each token needs its own "
                                 "name")
            tokens[name] = token
    env = os.environ.get("EMBRM_TOKEN", "").strip()
    if env:
        if len(env) < 16:
            raise EmbrmError("EMBRM_TOKEN must be at least 16 characters long")
        tokens[ENV_NAME] = env
    return tokens


def check_bind(host: str, tokens: dict[str, str]) -> None:
    """Refuse to listen beyond this machine without tokens."""
    if host not in LOOPBACK and not tokens:
        raise EmbrmError(f"refusing to serve on {host} without tokens: anyone who reaches it could use it; "
                         "pass --token-file or set EMBRM_TOKEN, or bind 127.0.0.1")


def who(header: str | None, tokens: dict[str, str]) -> str | None:
    """The name of the token in an ``Authorization: Bearer ...`` header, or None."""
    scheme, _, given_text = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given_text.strip():
        return None
    given = given_text.strip().encode()
    found = None
    for name, token in tokens.items():  # every token, every time
        if hmac.compare_digest(given, token.encode()):
            found = name
    return found
