"""``embrm store ls|show|export|rm|gc``: the commands over :mod:`embrm.store`."""
from __future__ import annotations

import json
from typing import Any

import click

from embrm.options import store_option


def open_any(uri: str | None) -> Any:
    """The store at ``uri``: a local or object store, or a service (``http(s)://``)."""
    if uri and uri.startswith(("http://", "https://")):
        from embrm.serve.client import RemoteStore

        return RemoteStore(uri)
    from embrm.store.store import open_store

    return open_store(uri)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip() for r in [header, *rows])


@click.group("store")
def store() -> None:
    """List, inspect, export and clean the embedding store."""


@store.command("ls")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of entries.")
def store_ls(store_uri: str | None, as_json: bool) -> None:
    """List every (model, dataset) entry."""
    from embrm.store.keys import short

    entries = open_any(store_uri).entries()
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
@store_option
def store_show(model: str, dataset: str, store_uri: str | None) -> None:
    """Show one entry: keys, configuration, counts."""
    e = open_any(store_uri).resolve(model, dataset)
    d = e.summary()
    d["model_config"] = e.model_config
    click.echo(json.dumps(d, indent=2))


@store.command("export")
@click.argument("model")
@click.argument("dataset")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="A .npy or .parquet file.")
@click.option("--layer", type=int, default=None, help="Layer to export (default: the first stored).")
@click.option("--no-text", is_flag=True, help="Parquet without the prompt and response texts.")
@store_option
def store_export(model: str, dataset: str, out: str, layer: int | None, no_text: bool, store_uri: str | None) -> None:
    """Export an entry's vectors (.npy) or rows, texts and vectors (.parquet)."""
    from embrm.store.export import export

    path = export(open_any(store_uri), model, dataset, out, layer=layer, texts=not no_text)
    click.echo(f"wrote {path}")


@store.command("rm")
@click.argument("model")
@click.argument("dataset")
@store_option
def store_rm(model: str, dataset: str, store_uri: str | None) -> None:
    """Remove an entry from the catalog (`gc` then frees its unshared vectors)."""
    from embrm.store.store import open_store

    e = open_store(store_uri).delete(model, dataset)
    click.echo(f"removed {e.model_name} x {e.dataset_name}")


@store.command("gc")
@store_option
def store_gc(store_uri: str | None) -> None:
    """Drop unreferenced tables and vectors, compact, remove old versions and stale caches."""
    from embrm.store.store import open_store

    res = open_store(store_uri).gc()
    click.echo(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in res.items()))
