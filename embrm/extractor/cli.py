"""``embrm extract``: the command over :func:`embrm.extractor.extraction`.

The model options are shared with ``embrm serve`` (:func:`model_options`), so a
served model and an extracted one are named by the same flags and fingerprints.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import click

from embrm.extractor.datasets import Columns
from embrm.extractor.pooling import POOLINGS
from embrm.options import INTS, store_option

MODEL_OPTIONS = [
    click.option("--model", default=None,
                 help="Hub id, model directory or .gguf file (default: packaged SmolLM2-135M-Instruct)."),
    click.option("--revision", default=None, help="Hub revision (branch, tag or commit) of --model."),
    click.option("--format", "input_format", type=click.Choice(["raw", "pair", "chat"]), default="raw",
                 show_default=True),
    click.option("--pooling", type=click.Choice(POOLINGS), default="last", show_default=True),
    click.option("--layers", type=INTS, default="-1", show_default=True,
                 help="Comma-separated hidden-state layers, e.g. -1,-8,15."),
    click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
                 show_default=True),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True),
    click.option("--max-length", type=click.IntRange(min=2), default=1024, show_default=True),
    click.option("--truncation-side", type=click.Choice(["left", "right"]), default="left", show_default=True),
    click.option("--batch-tokens", type=click.IntRange(min=1), default=None,
                 help="Padded tokens per forward batch (default: 2048 on CPU, 32768 on GPU)."),
    click.option("--trust-remote-code", is_flag=True, help="Allow model code from the hub (off by default)."),
]


RAY_PARAMS = ("address", "num_workers", "gpus_per_worker", "cpus_per_worker", "commit_rows", "commit_seconds")
SPEC_PARAMS = ("model", "revision", "input_format", "pooling", "layers", "dtype", "max_length", "truncation_side",
               "trust_remote_code")


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(MODEL_OPTIONS):
        fn = opt(fn)
    return fn


def embedding_spec(kw: dict[str, Any]) -> Any:
    """Pop the model options out of a command's keyword arguments into an EmbeddingSpec."""
    from embrm.extractor.embedder import EmbeddingSpec

    return EmbeddingSpec(model=kw.pop("model"), revision=kw.pop("revision"), input_format=kw.pop("input_format"),
                         pooling=kw.pop("pooling"), layers=kw.pop("layers"), dtype=kw.pop("dtype"),
                         max_length=kw.pop("max_length"), truncation_side=kw.pop("truncation_side"),
                         trust_remote_code=kw.pop("trust_remote_code"))


def given(ctx: click.Context, names: set[str] | tuple[str, ...]) -> list[str]:
    """The flags among ``names`` that the user gave (not left at their defaults)."""
    return [o.opts[0] for o in ctx.command.params
            if o.name in names and ctx.get_parameter_source(o.name).name not in ("DEFAULT", "DEFAULT_MAP")]


def dataset_options(required: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options that name a dataset source and map its columns (``extract``, and
    ``score``/``rerank`` of new texts)."""
    opts = [
        click.option("--dataset", required=required, default=None,
                     help="Hub dataset id, .jsonl/.json/.parquet/.csv file, or save_to_disk directory."),
        click.option("--split", default="train", show_default=True),
        click.option("--config", "ds_config", default=None, help="Hub dataset configuration."),
        click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N records."),
        *[click.option(f"--{c.replace('_', '-')}-col", f"{c}_col", default=getattr(Columns, c), show_default=True)
          for c in COLUMNS],
        click.option("--skip-bad-rows", is_flag=True,
                     help="Skip (and count) records with a non-text value or nothing to embed."),
    ]

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed(opts):
            fn = opt(fn)
        return fn

    return deco


COLUMNS = tuple(f.name for f in fields(Columns))  # a --<name>-col option each


def dataset_spec(kw: dict[str, Any]) -> Any:
    """Pop the dataset options out of a command's keyword arguments into a DatasetSpec."""
    from embrm.extractor.datasets import DatasetSpec

    cols = Columns(**{c: kw.pop(f"{c}_col") for c in COLUMNS})
    return DatasetSpec(kw.pop("dataset"), kw.pop("split"), kw.pop("ds_config"), None, kw.pop("limit"), cols,
                       kw.pop("skip_bad_rows"))


@click.command("extract")
@dataset_options()
@model_options
@click.option("--window", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Rows per store commit (a crash loses at most one).")
@click.option("--quiet", is_flag=True, help="No progress bars, ours or the libraries'.")
@click.option("--server", default=None, metavar="URL",
              help="Extract on an `embrm serve` service (its model, its store): the same as --store URL.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Run the forward passes in this process, or on Ray Data actors.")
@click.option("--address", default=None, help="[ray] Ray cluster to join ('auto': the running one); "
              "default: start a local Ray.")
@click.option("--num-workers", type=click.IntRange(min=1), default=1, show_default=True, help="[ray] Actors.")
@click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0.0, show_default=True, help="[ray]")
@click.option("--cpus-per-worker", type=click.FloatRange(min=0, min_open=True), default=0.5, show_default=True,
              help="[ray] Fractional keeps a CPU free for Ray Data's own tasks.")
@click.option("--commit-rows", type=click.IntRange(min=1), default=4096, show_default=True,
              help="[ray] The driver commits workers' fragments every this many rows...")
@click.option("--commit-seconds", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="[ray] ...or this many seconds (a crash loses at most one interval).")
@store_option
def extract_cmd(**kw: Any) -> None:
    """Embed every (prompt, response) of a dataset into the store, once."""
    if kw["quiet"]:
        from embrm.options import quiet_third_party

        quiet_third_party()
    from embrm.errors import EmbrmError
    from embrm.extractor.extraction import ExtractConfig, RunOptions, extract

    ctx = click.get_current_context()
    engine = kw.pop("engine")
    ray_kw = {k: kw.pop(k) for k in RAY_PARAMS}
    if engine != "ray" and given(ctx, RAY_PARAMS):
        raise EmbrmError(f"{', '.join(given(ctx, RAY_PARAMS))} only apply with --engine ray")
    server = kw.pop("server")
    if server and kw["store_uri"]:
        raise EmbrmError("--server URL is another way to write --store URL: give one of them")
    explicit_spec = bool(given(ctx, SPEC_PARAMS))
    data = dataset_spec(kw)
    spec = embedding_spec(kw)
    run = RunOptions(device=kw.pop("device"), batch_tokens=kw.pop("batch_tokens"), window=kw.pop("window"),
                     store=server or kw.pop("store_uri"), quiet=kw.pop("quiet"))
    ray = None
    if engine == "ray":
        from embrm.extractor.engines.ray import RayOptions

        ray = RayOptions(**ray_kw)
    res = extract(ExtractConfig(data, spec if explicit_spec else None, run), engine=engine, ray=ray)
    click.echo(res.report())


@click.command("verify")
@click.argument("model")
@click.argument("dataset")
@click.option("--sample", type=click.IntRange(min=1), default=64, show_default=True, help="Items to recompute.")
@click.option("--model", "model_path", default=None,
              help="Where this machine finds the entry's weights (default: the source the entry records).")
@click.option("--server", default=None, metavar="URL", help="Recompute through an `embrm serve` of the same model.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Which random sample.")
@store_option
def verify_cmd(model: str, dataset: str, sample: int, model_path: str | None, server: str | None, device: str,
               seed: int, store_uri: str | None) -> None:
    """Recompute a random sample of an entry's items and compare with the stored vectors
    (exit 1 when any is over tolerance)."""
    from embrm.extractor.verify import verify
    from embrm.store import open_store

    report = verify(open_store(store_uri), model, dataset, sample, model_path, server, device, seed)
    for line in report.lines():
        click.echo(line)
    if not report.ok:
        raise SystemExit(1)
