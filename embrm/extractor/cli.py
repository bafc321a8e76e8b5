"""``embrm extract``: the command over :func:`embrm.extractor.extract`."""
from __future__ import annotations

import click


def register(main: click.Group) -> None:
    main.add_command(extract_cmd)


@click.command("extract")
@click.option("--model", default=None, help="Hub id, model directory or .gguf file (default: packaged SmolLM2-135M-Instruct).")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit) of --model.")
@click.option("--dataset", required=True, help="Hub dataset id, .jsonl/.json/.parquet/.csv file, or save_to_disk directory.")
@click.option("--split", default="train", show_default=True)
@click.option("--config", "ds_config", default=None, help="Hub dataset configuration.")
@click.option("--format", "input_format", type=click.Choice(["raw", "pair", "chat"]), default="raw", show_default=True)
@click.option("--pooling", type=click.Choice(["last", "mean", "mean-all"]), default="last", show_default=True)
@click.option("--layers", default="-1", show_default=True, help="Comma-separated hidden-state layers, e.g. -1,-8,15.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto", show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--max-length", type=int, default=1024, show_default=True)
@click.option("--truncation-side", type=click.Choice(["left", "right"]), default="left", show_default=True)
@click.option("--batch-tokens", type=int, default=None, help="Padded tokens per forward batch (default: 2048 on CPU, 32768 on GPU).")
@click.option("--window", type=int, default=1024, show_default=True, help="Rows per store commit (a crash loses at most one).")
@click.option("--limit", type=int, default=None, help="Only the first N records.")
@click.option("--prompt-col", default="prompt", show_default=True)
@click.option("--response-col", default="response", show_default=True)
@click.option("--chosen-col", default="chosen", show_default=True)
@click.option("--rejected-col", default="rejected", show_default=True)
@click.option("--responses-col", default="responses", show_default=True)
@click.option("--rewards-col", default="rewards", show_default=True)
@click.option("--reward-col", default="reward", show_default=True)
@click.option("--label-col", default="label", show_default=True)
@click.option("--messages-col", default="messages", show_default=True)
@click.option("--skip-bad-rows", is_flag=True, help="Skip (and count) records with an empty or non-string text.")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code from the hub (off by default).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--store", "store_uri", default=None, envvar="EMBRM_STORE", help="Store path or URI.")
def extract_cmd(model, revision, dataset, split, ds_config, input_format, pooling, layers, dtype, device,
                max_length, truncation_side, batch_tokens, window, limit, prompt_col, response_col, chosen_col,
                rejected_col, responses_col, rewards_col, reward_col, label_col, messages_col,
                skip_bad_rows, trust_remote_code, quiet, store_uri) -> None:
    """Embed every (prompt, response) of a dataset into the store, once."""
    from embrm.extractor import Columns, ExtractConfig, extract
    from embrm.extractor.extract import parse_layers

    cols = Columns(prompt_col, response_col, chosen_col, rejected_col, responses_col, rewards_col,
                   reward_col, label_col, messages_col)
    cfg = ExtractConfig(dataset=dataset, model=model, revision=revision, split=split, config=ds_config,
                        columns=cols, limit=limit, input_format=input_format, pooling=pooling,
                        layers=parse_layers(layers), dtype=dtype, device=device, max_length=max_length,
                        truncation_side=truncation_side, batch_tokens=batch_tokens, window=window, store=store_uri,
                        quiet=quiet, trust_remote_code=trust_remote_code, skip_bad_rows=skip_bad_rows)
    if quiet:
        import os

        from transformers.utils import logging as hf_logging

        os.environ["TQDM_DISABLE"] = "1"  # also the GGUF loader's own bars

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    res = extract(cfg)
    click.echo(res.report())
