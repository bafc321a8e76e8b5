"""``embrm bench`` and ``embrm reproduce compare``: the commands over
:mod:`embrm.pipeline.bench` and :mod:`embrm.pipeline.compare`."""
from __future__ import annotations

from pathlib import Path

import click

from embrm.options import METHOD_LIST, NAMED_RUN, store_option

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


@click.command("compare")
@click.option("--methods", type=METHOD_LIST, required=True, help="Built-in or plugged-in methods, e.g. logreg,bt.")
@click.option("--models", required=True, help="Comma-separated base models (hub ids, directories or .gguf files).")
@click.option("--train", "train_source", required=True, help="The training set: a file or hub id (extracted once per "
              "model, through the store).")
@click.option("--winner-col", default="winner", show_default=True, help="The training set's winner column (A/B).")
@SUITE
@click.option("--no-suite", is_flag=True, help="In-domain cross-validation only.")
@DATA_ROOT
@LIMIT
@click.option("--train-limit", type=click.IntRange(min=1), default=None, help="Only the first N training records.")
@click.option("--seeds", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="Prompt-disjoint cross-validation folds (the same for every method and model).")
@click.option("--baseline", default=None, help="The method differences are measured against [default: the first].")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
              show_default=True)
@click.option("--out", default="compare-out", show_default=True, type=click.Path(file_okay=False))
@click.option("--quiet", is_flag=True, help="No progress bars.")
@store_option
def compare_cmd(methods, models, train_source, winner_col, suite, no_suite, data_root, limit, train_limit, seeds, folds,
                baseline, dtype, out, quiet, store_uri) -> None:
    """Methods x base models under one protocol: the same folds and seeds, in-domain CV and a
    held-out suite side by side, paired intervals against a baseline."""
    from embrm.extractor.datasets import Columns, DatasetSpec
    from embrm.pipeline.bench import load_suite
    from embrm.pipeline.compare import CompareConfig, compare, markdown
    from embrm.store import open_store

    cc = CompareConfig(methods=methods, models=tuple(m.strip() for m in models.split(",") if m.strip()),
                       train=DatasetSpec(train_source, limit=train_limit, columns=Columns(winner=winner_col)),
                       suite=None if no_suite else load_suite(suite, data_root, limit), seeds=seeds, folds=folds,
                       baseline=baseline, embedding={"dtype": dtype})
    doc = compare(cc, open_store(store_uri, create=True), Path(out), quiet=quiet, log=click.echo)
    click.echo(markdown(doc["rows"], doc["baseline"]))
    click.echo(f"wrote {out}/compare.md, compare.json, compare.csv, compare.png, folds.csv")
