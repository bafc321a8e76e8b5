"""``embrm bench`` and ``embrm reproduce compare``: the commands over
:mod:`embrm.pipeline.bench` and :mod:`embrm.pipeline.compare`."""
from __future__ import annotations

from pathlib import Path

import click

from embrm.options import NAMED_RUN, store_option

SUITE = click.option("--suite", default="heldout", show_default=True,
                     help="A built-in suite (heldout) or a suite .toml file.")
DATA_ROOT = click.option("--data-root", default=None, envvar="EMBRM_DATA", show_envvar=True, metavar="DIR",
                         help="Folder the suite's files are relative to (holding llmbar/ and hh-rlhf/).")
LIMIT = click.option("--limit", type=click.IntRange(min=1), default=None,
                     help="At most this many records of every subset (a subsample: say so when you report it).")


@click.command("bench")
@click.argument("runs", nargs=-1, required=True, type=NAMED_RUN)
@SUITE
@DATA_ROOT
@LIMIT
@click.option("--out", default="bench-out", show_default=True, type=click.Path(file_okay=False))
@click.option("--quiet", is_flag=True, help="No progress bars.")
@store_option
def bench_cmd(runs, suite, data_root, limit, out, quiet, store_uri) -> None:
    """Accuracy of trained runs on every subset and section of a suite, with 95% intervals
    (each run on its own base model's embeddings; what the store lacks is extracted first)."""
    from embrm.pipeline.bench import bench, load_suite
    from embrm.store import open_store

    s = load_suite(suite, data_root, limit)
    doc = bench(list(runs), s, open_store(store_uri, create=True), Path(out), quiet=quiet, log=click.echo)
    from embrm.pipeline.bench import markdown

    click.echo(markdown(doc))
    click.echo(f"wrote {out}/bench.md, bench.json, bench.csv, bench.png")
