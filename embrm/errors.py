"""The one exception type for mistakes a user can make.

The CLI catches :class:`EmbrmError`, prints its message on one line and exits 2; anything
else is a bug and keeps its traceback. Messages say what was wrong and what to do.
"""


class EmbrmError(Exception):
    """Bad input, an unknown key, a missing column: something the user can fix."""
