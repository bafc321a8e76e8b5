"""``embrm extract``: the command over :func:`embrm.extractor.extraction`.

The model options are shared with ``embrm serve`` (:func:`model_options`), so a
served model and an extracted one are named by the same flags and fingerprints.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from embrm.options import INTS, store_option

MODEL_OPTIONS = [
    click.option("--model", default=None,
                 help="Hub id, model directory or .gguf file (default: packaged SmolLM2-135M-Instruct)."),
    click.option("--revision", default=None, help="Hub revision (branch, tag or commit) of --model."),
    click.option("--format", "input_format", type=click.Choice(["raw", "pair", "chat"]), default="raw",
                 show_default=True),
    click.option("--pooling", type=click.Choice(["last", "mean", "mean-all"]), default="last", show_default=True),
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
MODEL_PARAMS = {"model", "revision", "input_format", "pooling", "layers", "dtype", "device", "max_length",
                "truncation_side", "batch_tokens", "trust_remote_code"}


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


@click.command("extract")
@click.option("--dataset", required=True,
              help="Hub dataset id, .jsonl/.json/.parquet/.csv file, or save_to_disk directory.")
@click.option("--split", default="train", show_default=True)
@click.option("--config", "ds_config", default=None, help="Hub dataset configuration.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N records.")
@click.option("--prompt-col", default="prompt", show_default=True)
@click.option("--response-col", default="response", show_default=True)
@click.option("--chosen-col", default="chosen", show_default=True)
@click.option("--rejected-col", default="rejected", show_default=True)
@click.option("--responses-col", default="responses", show_default=True)
@click.option("--rewards-col", default="rewards", show_default=True)
@click.option("--reward-col", default="reward", show_default=True)
@click.option("--label-col", default="label", show_default=True)
@click.option("--messages-col", default="messages", show_default=True)
@click.option("--skip-bad-rows", is_flag=True,
              help="Skip (and count) records with a non-text value or nothing to embed.")
@model_options
@click.option("--window", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Rows per store commit (a crash loses at most one).")
@click.option("--quiet", is_flag=True, help="No progress bars, ours or the libraries'.")
@click.option("--server", default=None, metavar="URL",
              help="Extract on an `embrm serve` service (its model, its store) instead of here.")
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
    from embrm.extractor.datasets import Columns, DatasetSpec
    from embrm.extractor.extraction import ExtractConfig, RunOptions

    server = kw.pop("server")
    ctx = click.get_current_context()
    engine = kw.pop("engine")
    ray_kw = {k: kw.pop(k) for k in RAY_PARAMS}
    if engine != "ray":
        given = [o.opts[0] for o in ctx.command.params
                 if o.name in RAY_PARAMS and ctx.get_parameter_source(o.name).name != "DEFAULT"]
        if given:
            from embrm.errors import EmbrmError

            raise EmbrmError(f"{', '.join(given)} only apply with --engine ray")
    if server:
        given = [o.opts[0] for o in click.get_current_context().command.params
                 if o.name in MODEL_PARAMS and click.get_current_context().get_parameter_source(o.name).name
                 != "DEFAULT"]
        if given or kw["store_uri"]:
            from embrm.errors import EmbrmError

            raise EmbrmError(f"{', '.join(given + (['--store'] if kw['store_uri'] else []))}: with --server the "
                             "service's model and store are used; see its GET /v1/info")

    cols = Columns(kw.pop("prompt_col"), kw.pop("response_col"), kw.pop("chosen_col"), kw.pop("rejected_col"),
                   kw.pop("responses_col"), kw.pop("rewards_col"), kw.pop("reward_col"), kw.pop("label_col"),
                   kw.pop("messages_col"))
    data = DatasetSpec(kw.pop("dataset"), kw.pop("split"), kw.pop("ds_config"), None, kw.pop("limit"), cols,
                       kw.pop("skip_bad_rows"))
    spec = embedding_spec(kw)
    run = RunOptions(device=kw.pop("device"), batch_tokens=kw.pop("batch_tokens"), window=kw.pop("window"),
                     store=kw.pop("store_uri"), quiet=kw.pop("quiet"))
    cfg = ExtractConfig(data, spec, run)
    if server:
        from embrm.serve.client import extract_remote

        res = extract_remote(server, cfg)
    elif engine == "ray":
        from embrm.extractor.engines.ray import RayOptions, extract_ray

        res = extract_ray(cfg, RayOptions(**ray_kw))
    else:
        from embrm.extractor.extraction import extract

        res = extract(cfg)
    click.echo(res.report())
