"""The ``embrm`` command line: a thin layer over the Python API.

Every command catches :class:`embrm.EmbrmError`, prints it on one line and exits 2.
Heavy imports (torch, transformers) happen inside the commands that need them, so
``embrm store ls`` starts fast.
"""
from __future__ import annotations

import json
import sys
from typing import Any

import click

from embrm import __version__
from embrm.errors import EmbrmError

STORE_OPT = click.option("--store", "store_uri", default=None, envvar="EMBRM_STORE",
                         help="Store path or URI (default: $EMBRM_STORE or ./embrm-store).")


class _Group(click.Group):
    """Turns EmbrmError into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EmbrmError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="embrm")
def main() -> None:
    """Reward-model research on reusable LLM embeddings."""


# ---------------------------------------------------------------------------- store
@main.group(cls=_Group)
def store() -> None:
    """List, inspect, export and clean the embedding store."""


def _open(uri: str | None, create: bool = False) -> Any:
    from embrm.store import open_store

    return open_store(uri, create=create)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), *(line(r) for r in rows)])


@store.command("ls")
@STORE_OPT
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of entries.")
def store_ls(store_uri: str | None, as_json: bool) -> None:
    """List every (model, dataset) entry."""
    from embrm.store.keys import short

    entries = _open(store_uri).entries()
    if as_json:
        click.echo(json.dumps([e.summary() for e in entries], indent=2))
        return
    if not entries:
        click.echo("(empty store)")
        return
    rows = [[f"{e.model_name} [{short(e.model_hash)}]", f"{e.dataset_name} [{short(e.dataset_hash)}]",
             e.kind, str(e.rows), str(e.dim), e.dtype, e.status] for e in entries]
    click.echo(_table(rows, ["MODEL", "DATASET", "KIND", "ROWS", "DIM", "DTYPE", "STATUS"]))


@store.command("show")
@click.argument("model")
@click.argument("dataset")
@STORE_OPT
def store_show(model: str, dataset: str, store_uri: str | None) -> None:
    """Show one entry: keys, configuration, counts."""
    e = _open(store_uri).resolve(model, dataset)
    d = e.summary()
    d["model_config"] = e.model_config
    click.echo(json.dumps(d, indent=2))


@store.command("export")
@click.argument("model")
@click.argument("dataset")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="A .npy or .parquet file.")
@click.option("--layer", type=int, default=None, help="Layer to export (default: the first stored).")
@STORE_OPT
def store_export(model: str, dataset: str, out: str, layer: int | None, store_uri: str | None) -> None:
    """Export an entry's vectors (.npy) or rows and vectors (.parquet)."""
    from embrm.store import export

    path = export(_open(store_uri), model, dataset, out, layer=layer)
    click.echo(f"wrote {path}")


@store.command("rm")
@click.argument("model")
@click.argument("dataset")
@STORE_OPT
def store_rm(model: str, dataset: str, store_uri: str | None) -> None:
    """Remove an entry from the catalog (`gc` then frees its unshared vectors)."""
    e = _open(store_uri).delete(model, dataset)
    click.echo(f"removed {e.model_name} x {e.dataset_name}")


@store.command("gc")
@STORE_OPT
def store_gc(store_uri: str | None) -> None:
    """Drop unreferenced tables and vectors, compact, and clear stale load caches."""
    res = _open(store_uri).gc()
    click.echo(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in res.items()))


for _mod in ("embrm.extractor.cli", "embrm.rm.cli", "embrm.pipeline.cli"):
    try:
        __import__(_mod)
        sys.modules[_mod].register(main)
    except ModuleNotFoundError as _e:  # a part not written yet
        if _e.name != _mod:
            raise


if __name__ == "__main__":
    main()
