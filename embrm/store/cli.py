"""``embrm store ls|show|export|rm|gc``: the commands over :mod:`embrm.store`."""
from __future__ import annotations

import json
from pathlib import Path

import click

from embrm.group import EmbrmGroup
from embrm.store.option import store_option


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip() for r in [header, *rows])


@click.group("store", cls=EmbrmGroup, lazy={"verify": "embrm.extractor.cli:verify_cmd"})
def store() -> None:
    """List, inspect, export and clean the embedding store."""


@store.command("ls")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of entries.")
def store_ls(store_uri: str | None, as_json: bool) -> None:
    """List every (model, dataset) entry."""
    from embrm.printable import printable
    from embrm.store import open_store
    from embrm.store.keys import short

    entries = open_store(store_uri).entries()
    if as_json:
        click.echo(json.dumps([e.summary() for e in entries], indent=2))
        return
    if not entries:
        click.echo("(empty store)")
        return
    rows = [[f"{printable(e.model_name, 80)} [{short(e.model_hash)}]",
             f"{printable(e.dataset_name, 80)} [{short(e.dataset_hash)}]", e.kind, str(e.rows), str(e.dim), e.dtype,
             e.status] for e in entries]
    click.echo(_table(rows, ["MODEL", "DATASET", "KIND", "ROWS", "DIM", "DTYPE", "STATUS"]))


@store.command("show")
@click.argument("model")
@click.argument("dataset")
@store_option
def store_show(model: str, dataset: str, store_uri: str | None) -> None:
    """Show one entry (JSON): keys, configuration, counts, and how its vectors were computed."""
    from embrm.store import open_store
    from embrm.store.provenance import describe, mixed

    st = open_store(store_uri)
    e = st.resolve(model, dataset)
    d = e.summary()
    d["model_config"] = e.model_config
    prov = st.entry_provenance(e.model_hash, e.dataset_hash)
    d["provenance"] = [describe(r) for r in prov["provenance"]]
    d["provenance_records"] = prov["provenance"]
    d["mixed_provenance"] = mixed(prov)
    if mixed(prov):
        d["warning"] = (f"MIXED PROVENANCE: this entry's vectors come from {len(prov['provenance'])} different ways "
                        "of computing them (see provenance); `embrm store verify` checks a sample on this machine")
    click.echo(json.dumps(d, indent=2))


@store.command("export")
@click.argument("model")
@click.argument("dataset")
@click.option("--out", required=True, type=click.Path(), help="A .npy or .parquet file, or a bundle's directory.")
@click.option("--format", "fmt", type=click.Choice(["file", "bundle"]), default="file",
              help="file: one .npy/.parquet; bundle: a directory to publish and `store import` (every layer, "
                   "manifest, checksums, provenance).")
@click.option("--layer", type=int, default=None, help="Layer to export (default: the first stored).")
@click.option("--no-text", is_flag=True, help="Parquet without the prompt and response texts.")
@click.option("--force", is_flag=True, help="Replace --out if it exists (otherwise an existing file is refused).")
@store_option
def store_export(model: str, dataset: str, out: str, fmt: str, layer: int | None, no_text: bool, force: bool,
                 store_uri: str | None) -> None:
    """Export an entry's vectors (.npy), rows, texts and vectors (.parquet), or a bundle."""
    from embrm.store import export, open_store

    if fmt == "bundle":
        from embrm.store.bundle import export_bundle

        click.echo(f"wrote {export_bundle(open_store(store_uri), model, dataset, out, force)}/")
        return
    path = export(open_store(store_uri), model, dataset, out, layer=layer, texts=not no_text, force=force)
    click.echo(f"wrote {path}")


@store.command("copy")
@click.option("--from", "src", required=True, help="The store to copy from: a path, s3://... or http(s)://...")
@click.option("--to", "dst", required=True, help="The store to copy into (created if it is a new path or prefix).")
@click.argument("keys", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Copy every entry of --from.")
@click.option("--rms", is_flag=True, help="Also copy the published reward models --to lacks.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def store_copy(src: str, dst: str, keys: tuple[str, ...], everything: bool, rms: bool, quiet: bool) -> None:
    """Copy entries (MODEL DATASET pairs) between stores: only what the target lacks, verified."""
    from embrm.errors import EmbrmError
    from embrm.store import open_store
    from embrm.store.copy import copy_store

    if len(keys) % 2:
        raise EmbrmError("entries are named as MODEL DATASET pairs; one key is left over")
    pairs = [(keys[i], keys[i + 1]) for i in range(0, len(keys), 2)]
    res = copy_store(open_store(src), open_store(dst, create=True), pairs, everything, rms, progress=not quiet)
    for r in res["entries"]:
        click.echo(r.line())
    if rms:
        click.echo(f"reward models copied: {', '.join(res['rms']) or 'none (the target has them all)'}")


@store.command("import")
@click.argument("bundle")
@store_option
def store_import(bundle: str, store_uri: str | None) -> None:
    """Import a bundle directory (made by `store export --format bundle`), checked first."""
    from embrm.store import open_store
    from embrm.store.bundle_check import import_bundle

    click.echo(import_bundle(open_store(store_uri, create=True), bundle).line())


@store.command("rm")
@click.argument("model")
@click.argument("dataset")
@store_option
def store_rm(model: str, dataset: str, store_uri: str | None) -> None:
    """Remove an entry from the catalog (`gc` then frees its unshared vectors)."""
    from embrm.store import open_store

    e = open_store(store_uri).delete(model, dataset)
    click.echo(f"removed {e.model_name} x {e.dataset_name}")


@store.command("gc")
@store_option
def store_gc(store_uri: str | None) -> None:
    """Drop unreferenced tables and vectors, compact, remove old versions and stale caches."""
    from embrm.store import open_store

    res = open_store(store_uri).gc()
    click.echo(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in res.items()))


@click.group("rm")
def rm_group() -> None:
    """Publish, list and fetch trained reward models in the store (local, s3:// or a service)."""


@rm_group.command("push")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--name", required=True, help="The name to publish under: 1-64 letters, digits, '.', '_' or '-'.")
@click.option("--force", is_flag=True, help="Replace a run already published under NAME.")
@store_option
def rm_push(run_dir: str, name: str, force: bool, store_uri: str | None) -> None:
    """Publish a run directory (checked first; weights travel as safetensors, never pickle).
    A local directory or object-store prefix that holds no store yet becomes one."""
    from embrm.runformat import read_files
    from embrm.store import open_store

    read_files(Path(run_dir))  # checked before a store is opened, or created as `extract` does
    store = open_store(store_uri, create=True)
    s = store.push_run(name, Path(run_dir), force)
    click.echo(f"pushed {s['name']} ({s['method']} x{s['members']}, dim {s['dim']}, layer {s['layer']}) to {store.uri}")


@rm_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@store_option
def rm_ls(as_json: bool, store_uri: str | None) -> None:
    """List the published reward models (on a service: what it serves)."""
    from embrm.printable import printable
    from embrm.store import open_store

    runs = open_store(store_uri).runs()
    if as_json:
        click.echo(json.dumps(runs, indent=2))
        return
    if not runs:
        click.echo("(no reward models)")
        return
    rows = [[printable(r["name"], 64), r["method"], str(r["members"]), str(r["dim"]), str(r["layer"]),
             f"{printable(str(r.get('model_name') or ''), 60)} [{str(r.get('model_hash') or '')[:12]}]",
             printable(str(r.get("dataset_name") or ""), 60)] for r in runs]
    click.echo(_table(rows, ["NAME", "METHOD", "MEMBERS", "DIM", "LAYER", "EMBEDDING", "TRAINED ON"]))


@rm_group.command("pull")
@click.argument("name")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="A new (or empty) directory.")
@store_option
def rm_pull(name: str, out: str, store_uri: str | None) -> None:
    """Fetch a published run into a directory, as it was pushed."""
    from embrm.store import open_store

    click.echo(f"wrote {open_store(store_uri).pull_run(name, Path(out))}/")
