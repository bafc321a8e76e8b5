"""What every command shares: the ``--store`` option, list parameters, one-line errors.

Kept apart from the commands so each command module stays a cheap import (click only):
``embrm --help`` imports every command module to list them.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from embrm.errors import EmbrmError

store_option = click.option(
    "--store", "store_uri", default=None, envvar="EMBRM_STORE", show_envvar=True, metavar="URI",
    help="Store: a local path, an object-store URI (s3://bucket/prefix) or a service (http://host:port). "
         "Default: $EMBRM_STORE, else ./embrm-store.")


class ListParam(click.ParamType):
    """A comma-separated list of numbers (``-1,-8,15``), each checked and converted."""

    def __init__(self, kind: type, example: str, minimum: float | None = None):
        self.kind, self.example, self.minimum = kind, example, minimum
        self.name = f"{kind.__name__}s"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[Any, ...]:
        if isinstance(value, tuple):
            return value
        words = "integers" if self.kind is int else "numbers"
        try:
            out = tuple(self.kind(x) for x in str(value).split(",") if x.strip())
        except ValueError:
            self.fail(f"{value!r} must be comma-separated {words}, e.g. {self.example}", param, ctx)
        if not out:
            self.fail(f"{value!r} is empty: give comma-separated {words}, e.g. {self.example}", param, ctx)
        if self.kind is float and any(x != x or x in (float("inf"), float("-inf")) for x in out):
            self.fail(f"{value!r}: every value must be a finite number", param, ctx)
        if self.minimum is not None and any(x < self.minimum for x in out):
            self.fail(f"{value!r}: every value must be at least {self.minimum:g}", param, ctx)
        return out


class FiniteFloat(click.ParamType):
    """A float that is a number: click's own float type takes ``nan`` and ``inf``."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        import math

        try:
            x = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(x):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return x


FINITE = FiniteFloat()


class ChoiceList(click.ParamType):
    """A comma-separated list of choices (``bt,clf``)."""

    name = "choices"

    def __init__(self, choices: Sequence[str]):
        self.choices = tuple(choices)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        out = tuple(x.strip() for x in str(value).split(",") if x.strip())
        bad = [x for x in out if x not in self.choices]
        if bad or not out:
            self.fail(f"{value!r}: use a comma-separated list of {', '.join(self.choices)}", param, ctx)
        return out


class MethodParam(click.ParamType):
    """A reward-model method: a name from the registry (:func:`embrm.methods.names`, which
    imports no torch), or ``module:attr`` of a plug-in (imported and registered: the user
    named it). ``many``: a comma-separated list of them."""

    name = "method"

    def __init__(self, many: bool = False):
        self.many = many

    def get_metavar(self, param: click.Parameter, *args: Any, **kwargs: Any) -> str:
        from embrm.methods import names

        return ("[" + "|".join(names()) + "|module:attr]") + (",..." if self.many else "")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from embrm import methods

        if isinstance(value, tuple) or (not self.many and value in methods.names()):
            return value
        out = [x.strip() for x in str(value).split(",")] if self.many else [str(value)]
        if not all(out):
            self.fail(f"{value!r}: give comma-separated methods, e.g. bt,logreg", param, ctx)
        try:
            got = tuple(methods.resolve(x) for x in out)
        except EmbrmError as e:
            self.fail(str(e), param, ctx)
        return got if self.many else got[0]


METHOD, METHOD_LIST = MethodParam(), MethodParam(many=True)


class NamedRun(click.ParamType):
    """``NAME=RUN_DIR`` or ``RUN_DIR`` (named after its directory) -> (name, path)."""

    name = "run"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, Any]:
        from pathlib import Path

        if isinstance(value, tuple):
            return value
        name, sep, path = str(value).partition("=")
        if not sep:
            name, path = Path(value).resolve().name, value
        p = Path(path)
        if not (p / "config.json").is_file():
            self.fail(f"{path!r} is not a run directory (no config.json): pass the --out of `embrm train`", param, ctx)
        from embrm.store.registry import check_name

        try:
            check_name(name)
        except EmbrmError as e:
            self.fail(str(e), param, ctx)
        return name, p


NAMED_RUN = NamedRun()
INTS = ListParam(int, "-1,-8,15")
SIZES = ListParam(int, "1024,512", minimum=1)
NS = ListParam(int, "1,2,5,10", minimum=1)
FLOATS = ListParam(float, "-1,10,1,0.3")


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
            import importlib

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


def quiet_third_party() -> None:
    """Silence transformers' logging and every tqdm bar (the GGUF loader draws its own)."""
    import os

    os.environ["TQDM_DISABLE"] = "1"  # tqdm reads it when first imported
    if "tqdm" in sys.modules:  # imported already: set the same default its env reading would
        from functools import partialmethod

        import tqdm.std

        tqdm.std.tqdm.__init__ = partialmethod(tqdm.std.tqdm.__init__, disable=True)  # type: ignore[method-assign]
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

