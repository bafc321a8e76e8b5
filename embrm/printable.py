"""Text from users and stores, made safe to print on one line or write to a log.

Names and paths come from files, uploads and URLs. Printed raw, a NUL or a newline in
one forges a log line or garbles a table; so control, format and line-separator
characters are shown as ``\\uXXXX`` escapes, and long strings are cut.
"""
from __future__ import annotations

import unicodedata


def printable(text: str, most: int | None = None) -> str:
    """``text`` with control, format and line-separator characters escaped, cut to
    ``most`` characters (an ellipsis shows the cut)."""
    cut = text if most is None else text[:most]
    out = "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") else c for c in cut)
    return out + ("..." if most is not None and len(text) > most else "")
