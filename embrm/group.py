"""The top-level click group (commands load when used, every error is one line).

Below every layer (click and :mod:`embrm.errors` only), so any command group, the
store's own included, can use it without importing the modules above it.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from embrm.errors import EmbrmError


def one_line(message: str) -> str:
    return "; ".join(line.strip() for line in message.strip().splitlines() if line.strip())


class EmbrmGroup(click.Group):
    """The top-level group: commands load when used, and every error is one line.

    Commands are named here as ``module:attribute`` and imported only when run (or when
    ``--help`` lists them), so ``embrm store ls`` never imports torch. Usage errors
    (a bad option value) and :class:`~embrm.errors.EmbrmError` print one ``error:``
    line and exit 2; anything else is a bug and keeps its traceback.
    """

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in self.lazy:
            module, attr = self.lazy[name].split(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return self.commands.get(name)

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        except click.ClickException as e:
            ctx = getattr(e, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            click.echo(f"error: {one_line(e.format_message())}{hint}", err=True)
            sys.exit(e.exit_code)
        except EmbrmError as e:
            click.echo(f"error: {one_line(str(e))}", err=True)
            sys.exit(2)
        sys.exit(rv if isinstance(rv, int) else 0)
