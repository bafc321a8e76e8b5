"""``embrm generate``, ``annotate``, ``demo`` and ``reproduce`` (``ensemble``, ``layers``)."""
from __future__ import annotations

from pathlib import Path

import click

from embrm.options import FLOATS, METHODS, NS, SIZES, ChoiceList, store_option


def _quiet_hf(quiet: bool) -> None:
    """transformers' own logging stays off; with --quiet every progress bar too."""
    from embrm.options import quiet_third_party

    if quiet:
        quiet_third_party()
        return
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


@click.command("generate")
@click.option("--prompts", required=True,
              help="A .txt (a prompt a line), a .jsonl/.parquet/.csv with a prompt column, or 'builtin'.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="A .jsonl or .parquet file to write.")
@click.option("--model", default=None, help="Hub id, directory or .gguf (default: packaged SmolLM2-135M-Instruct).")
@click.option("--k", type=int, default=8, show_default=True, help="Responses per prompt.")
@click.option("--temperature", type=float, default=0.8, show_default=True)
@click.option("--top-p", type=float, default=0.95, show_default=True)
@click.option("--max-new-tokens", type=int, default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--top-k", type=click.IntRange(min=0), default=50, show_default=True, help="0: the whole vocabulary.")
@click.option("--batch-prompts", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--prompt-column", default="prompt", show_default=True)
@click.option("--limit", type=int, default=None)
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
              show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--quiet", is_flag=True)
def generate_cmd(prompts, out, model, k, temperature, top_p, max_new_tokens, seed, top_k, batch_prompts,
                 prompt_column, limit, dtype, device, quiet) -> None:
    """Sample K responses per prompt into a multi-response dataset file (resumable)."""
    from embrm.pipeline.generate import GenerateConfig, generate

    _quiet_hf(quiet)
    res = generate(GenerateConfig(prompts=prompts, out=out, model=model, k=k, temperature=temperature, top_p=top_p,
                                  top_k=top_k, max_new_tokens=max_new_tokens, seed=seed, batch_prompts=batch_prompts,
                                  prompt_column=prompt_column, limit=limit, dtype=dtype, device=device, quiet=quiet))
    click.echo(f"{res['prompts']} prompts: generated {res['generated']}, reused {res['reused']} "
               f"({res['seconds']:.1f} s) -> {res['out']}")


@click.command("annotate")
@click.option("--dataset", required=True, type=click.Path(dir_okay=False), help="A .jsonl or .parquet dataset file.")
@click.option("--reward-model", default="vader", show_default=True,
              help="'vader' (offline default) or a sequence-classification model: hub id or directory.")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Write here instead of in place.")
@click.option("--batch-tokens", type=int, default=4096, show_default=True)
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="float32",
              show_default=True, help="Compute dtype of a reward model (VADER ignores it).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--quiet", is_flag=True)
def annotate_cmd(dataset, reward_model, out, batch_tokens, dtype, device, quiet) -> None:
    """Score every response with a golden reward and write the rewards (resumable)."""
    from embrm.pipeline.annotate import AnnotateConfig, annotate

    _quiet_hf(quiet)
    res = annotate(AnnotateConfig(dataset=dataset, out=out, reward_model=reward_model, batch_tokens=batch_tokens,
                                  dtype=dtype, device=device, quiet=quiet))
    click.echo(f"{res['records']} records: scored {res['scored']}, reused {res['reused']} with "
               f"{res['reward_model']} ({res['seconds']:.1f} s) -> {res['out']}")


@click.command("demo")
@click.option("--out", default="demo-out", show_default=True, type=click.Path(file_okay=False))
@store_option
@click.option("--k", type=int, default=8, show_default=True)
@click.option("--max-new-tokens", type=int, default=48, show_default=True)
@click.option("--members", type=int, default=5, show_default=True)
@click.option("--limit", type=int, default=None, help="Only the first N built-in prompts.")
@click.option("--quiet", is_flag=True)
def demo_cmd(out, store_uri, k, max_new_tokens, members, limit, quiet) -> None:
    """Generate, annotate, extract, train and evaluate on the embedded model, offline."""
    from embrm.pipeline.demo import DemoConfig, run_demo

    _quiet_hf(quiet)
    run_demo(DemoConfig(out=out, store=store_uri, k=k, max_new_tokens=max_new_tokens, members=members,
                        limit=limit, quiet=quiet), log=click.echo)


@click.group("reproduce")
def reproduce() -> None:
    """The seed paper's case studies on data in the store."""


@reproduce.command("ensemble")
@click.option("--model-key", required=True)
@click.option("--dataset-key", required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--members", type=int, default=5, show_default=True)
@click.option("--qualities", type=FLOATS, default="-1,10,1,0.3", show_default=True,
              help="Annotation qualities (beta); -1 is perfect.")
@click.option("--methods", type=ChoiceList(METHODS), default="bt,clf", show_default=True)
@click.option("--hidden", type=SIZES, default="1024,512", show_default=True)
@click.option("--bon", type=NS, default=None, help="N values (default: 1..500 capped at K).")
@click.option("--seed", type=int, default=0, show_default=True)
@store_option
def reproduce_ensemble_cmd(model_key, dataset_key, out, members, qualities, methods, hidden, bon, seed,
                           store_uri) -> None:
    """Mean vs min vs single ensembles across annotation qualities: one figure, one table."""
    from embrm.pipeline.reproduce import ReproduceConfig, markdown, reproduce_ensemble
    from embrm.store.cli import open_any

    rc = ReproduceConfig(methods=methods, qualities=qualities, members=members, hidden=hidden, seed=seed)
    rows = reproduce_ensemble(open_any(store_uri), model_key, dataset_key, Path(out), rc, list(bon) if bon else None,
                              log=click.echo)
    click.echo(markdown(rows))
    click.echo(f"wrote {out}/ensemble.png, ensemble.md, ensemble.csv")


@reproduce.command("layers")
@click.option("--model-key", required=True, help="A model entry extracted with several layers (--layers).")
@click.option("--dataset-key", required=True)
@click.option("--methods", type=ChoiceList(METHODS), default="logreg,bt", show_default=True)
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="Cross-validation folds, disjoint in prompts.")
@click.option("--members", type=click.IntRange(min=1), default=1, show_default=True, help="Ensemble size.")
@click.option("--hidden", type=SIZES, default="1024,512", show_default=True, help="MLP hidden sizes.")
@click.option("--combine", type=ChoiceList(["concat", "mean"]), default=None,
              help="Also train on the concatenation and/or the mean of every stored layer.")
@click.option("--prompts", type=click.IntRange(min=2), default=None, help="A seeded subset of this many prompts.")
@click.option("--bon", "bon_n", type=click.IntRange(min=1), default=None,
              help="N of the best-of-N metric on multi-response data (default: K).")
@click.option("--standardize/--no-standardize", default=None,
              help="Standardise features with training-split statistics [default: per method].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", default="layers-out", show_default=True, type=click.Path(file_okay=False))
@store_option
def reproduce_layers_cmd(model_key, dataset_key, methods, folds, members, hidden, combine, prompts, bon_n, standardize,
                         seed, out, store_uri) -> None:
    """Every stored layer (and their combinations), k-fold cross-validated: one figure, one table."""
    from embrm.pipeline.reproduce_layers import LayersConfig, markdown, reproduce_layers
    from embrm.store.cli import open_any

    lc = LayersConfig(methods=methods, folds=folds, members=members, hidden=hidden, combine=combine or (),
                      prompts=prompts, bon_n=bon_n, standardize=standardize, seed=seed)
    result = reproduce_layers(open_any(store_uri), model_key, dataset_key, Path(out), lc, log=click.echo)
    click.echo(markdown(result))
    click.echo(f"wrote {out}/layers.png, layers.md, layers.csv, layers.json")
