"""``embrm generate``, ``annotate``, ``demo``, ``reproduce`` (``ensemble``, ``layers``),
``score`` / ``rerank`` (reward models on stored entries or on new texts) and ``active
select`` (the next pairs to label)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from embrm.extractor.cli import dataset_options, dataset_spec
from embrm.options import FINITE, FLOATS, METHOD, METHOD_LIST, NS, SIZES, ChoiceList, store_option
from embrm.pipeline.compare_cli import compare_cmd as _compare_cmd
from embrm.rm.rules import RULES as RULE_NAMES


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
@click.option("--methods", type=METHOD_LIST, default="bt,clf", show_default=True)
@click.option("--hidden", type=SIZES, default="1024,512", show_default=True)
@click.option("--bon", type=NS, default=None, help="N values (default: 1..500 capped at K).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Ensembles per setting (seeds --seed, --seed + 1, ...); tables and bands show 95% intervals.")
@click.option("--pairs-per-prompt", type=click.IntRange(min=1), default=10, show_default=True)
@store_option
def reproduce_ensemble_cmd(model_key, dataset_key, out, members, qualities, methods, hidden, bon, seed, seeds,
                           pairs_per_prompt, store_uri) -> None:
    """Mean vs min vs single vs mean-var ensembles across annotation qualities: one figure, one table."""
    from embrm.pipeline.reproduce import ReproduceConfig, markdown, reproduce_ensemble
    from embrm.store import open_store

    rc = ReproduceConfig(methods=methods, qualities=qualities, members=members, hidden=hidden, seed=seed, seeds=seeds,
                         pairs_per_prompt=pairs_per_prompt)
    rows = reproduce_ensemble(open_store(store_uri), model_key, dataset_key, Path(out), rc, list(bon) if bon else None,
                              log=click.echo)
    click.echo(markdown(rows))
    click.echo(f"wrote {out}/ensemble.png, ensemble.md, ensemble.csv")


@reproduce.command("layers")
@click.option("--model-key", required=True, help="A model entry extracted with several layers (--layers).")
@click.option("--dataset-key", required=True)
@click.option("--methods", type=METHOD_LIST, default="logreg,bt", show_default=True)
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
    from embrm.store import open_store

    lc = LayersConfig(methods=methods, folds=folds, members=members, hidden=hidden, combine=combine or (),
                      prompts=prompts, bon_n=bon_n, standardize=standardize, seed=seed)
    result = reproduce_layers(open_store(store_uri), model_key, dataset_key, Path(out), lc, log=click.echo)
    click.echo(markdown(result))
    click.echo(f"wrote {out}/layers.png, layers.md, layers.csv, layers.json")


def _new_texts(kw: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(dataset spec, store, run options) of ``score``/``rerank`` on new texts."""
    from embrm.errors import EmbrmError
    from embrm.extractor.config import RunOptions
    from embrm.store import open_store

    server = kw.pop("server")
    if server and kw["store_uri"]:
        raise EmbrmError("--server URL is another way to write --store URL: give one of them")
    uri = server or kw.pop("store_uri")
    quiet = kw.pop("quiet")
    _quiet_hf(quiet)
    return dataset_spec(kw), open_store(uri, create=True), RunOptions(store=uri, quiet=quiet)


NEW_TEXTS = [click.option("--server", default=None, metavar="URL", help="Embed on an `embrm serve` service (its "
                          "model must be the run's): the same as --store URL."),
             click.option("--quiet", is_flag=True, help="No progress bars.")]


def new_text_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = dataset_options(required=False)(fn)
    for opt in reversed(NEW_TEXTS):
        fn = opt(fn)
    return fn


@click.command("score")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--dataset-key", default=None, help="An entry in the store (name, hash or hash prefix)...")
@new_text_options
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="A Parquet file to write.")
@click.option("--force", is_flag=True, help="Replace --out if it exists (otherwise an existing file is refused).")
@store_option
def score_cmd(run_dir, dataset_key, out, force, **kw) -> None:
    """Score every row of a stored entry (--dataset-key), or of new texts (--dataset, embedded
    first as the run needs); write Parquet with the aggregated and member rewards."""
    from embrm.errors import EmbrmError

    if (dataset_key is None) == (kw["dataset"] is None):
        raise EmbrmError("give --dataset-key (an entry in the store) or --dataset (new texts), one of them")
    if dataset_key is not None:
        from embrm.rm.experiment import score_from_store
        from embrm.store import open_store

        path = score_from_store(Path(run_dir), open_store(kw["server"] or kw["store_uri"]), dataset_key, Path(out),
                                force=force)
    else:
        from embrm.pipeline.new_texts import score_texts

        data, store, run = _new_texts(kw)
        path = score_texts(Path(run_dir), data, store, Path(out), run, force)
    click.echo(f"wrote {path}")


@click.command("rerank")
@click.argument("run_dir", type=click.Path(file_okay=False))
@new_text_options
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="A .jsonl file of the picks.")
@click.option("--aggregation", type=click.Choice(["mean", "min", "single", "mean-var", "mean-std"]), default="mean",
              show_default=True)
@click.option("--coef", type=FINITE, default=1.0, show_default=True, help="lambda / beta of mean-var and mean-std.")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@store_option
def rerank_cmd(run_dir, out, aggregation, coef, force, **kw) -> None:
    """Best-of-N: embed a multi-response dataset as the run needs, write each prompt's best
    response under the run's rewards."""
    from embrm.errors import EmbrmError
    from embrm.pipeline.new_texts import rerank_texts

    if kw["dataset"] is None:
        raise EmbrmError("--dataset is needed: the prompts and their candidate responses")
    data, store, run = _new_texts(kw)
    res = rerank_texts(Path(run_dir), data, store, Path(out), run, aggregation, coef, force)
    click.echo(f"{res['prompts']} prompts, {res['items']} candidates: best of each -> {res['out']}")


@reproduce.command("active")
@click.option("--model-key", required=True)
@click.option("--dataset-key", required=True,
              help="Multi-response with golden rewards (simulated annotator), or pairwise (its own labels).")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--rules", type=ChoiceList(RULE_NAMES), default=",".join(RULE_NAMES), show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--per-round", type=click.IntRange(min=1), default=100, show_default=True, help="Pairs labelled a round.")
@click.option("--seeds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Runs of each rule (seeds 0..n-1).")
@click.option("--pairs", type=click.Choice(["within", "cross"]), default="within", show_default=True)
@click.option("--annotation-quality", type=float, default=-1.0, show_default=True,
              help="beta of the simulated annotator; negative means perfect.")
@click.option("--prompts-per-round", type=click.IntRange(min=1), default=50, show_default=True,
              help="Prompts drawn a round to build candidates from.")
@click.option("--candidates", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Candidate pairs a round (within: at most every pair of the drawn prompts).")
@click.option("--method", type=METHOD, default="bt", show_default=True,
              help="A method trained by the AdamW loop (it warm-starts each round from the last).")
@click.option("--hidden", type=SIZES, default="64", show_default=True)
@click.option("--members", type=click.IntRange(min=1), default=4, show_default=True,
              help="Ensemble size of every rule's model (disagreement needs 2 or more).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--warm-start", is_flag=True, help="Start each round from the last round's model.")
@click.option("--ridge", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="D-optimal prior, in units of one average candidate's information.")
@click.option("--val-frac", type=float, default=0.2, show_default=True, help="Prompts held out for evaluation.")
@click.option("--bon", type=NS, default=None, help="N values (default: 1..500 capped at K).")
@click.option("--layer", type=int, default=None, help="Stored layer (default: the first).")
@store_option
def reproduce_active_cmd(model_key, dataset_key, out, rules, rounds, per_round, seeds, pairs, annotation_quality,
                         prompts_per_round, candidates, method, hidden, members, lr, weight_decay, warm_start, ridge,
                         val_frac, bon, layer, store_uri) -> None:
    """Active reward modeling: selection rules side by side as labels accumulate."""
    from embrm.pipeline.active_study import ActiveStudyConfig, markdown, reproduce_active
    from embrm.store import open_store

    cfg = ActiveStudyConfig(rules=rules, rounds=rounds, per_round=per_round, seeds=seeds, pairs=pairs,
                            annotation_quality=annotation_quality, prompts_per_round=prompts_per_round,
                            candidates=candidates, method=method, hidden=hidden, members=members, lr=lr,
                            weight_decay=weight_decay, warm_start=warm_start, ridge=ridge, val_frac=val_frac)
    result = reproduce_active(open_store(store_uri), model_key, dataset_key, Path(out), cfg,
                              list(bon) if bon else None, layer, log=click.echo)
    click.echo(markdown(result), nl=False)
    click.echo(f"wrote {out}/active.png, active.md, active.csv, active.json")


@click.group("active")
def active() -> None:
    """Active reward modeling: choose which pairs annotators label next."""


@active.command("select")
@click.option("--rm", "run_dir", default=None, type=click.Path(file_okay=False),
              help="A run directory of `embrm train` (its model picks the pairs); not needed for --rule random.")
@click.option("--model-key", required=True, help="The model the run was trained on.")
@click.option("--dataset-key", required=True, help="The pool: a multi-response, pointwise or pairwise entry.")
@click.option("--budget", required=True, type=int, help="Pairs to select.")
@click.option("--rule", type=click.Choice(RULE_NAMES), default="dopt", show_default=True)
@click.option("--pairs", type=click.Choice(["within", "cross"]), default="within", show_default=True,
              help="Pairs within a prompt, or across two prompts (a pairwise pool uses its stored pairs).")
@click.option("--candidates", type=click.IntRange(min=1), default=200_000, show_default=True,
              help="Cross-prompt pairs drawn (within: all pairs, or this many at random).")
@click.option("--exclude", multiple=True, type=click.Path(dir_okay=False, exists=True),
              help="A file of labelled pairs: never selected again, and counted by dopt-past. Repeatable.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="A .jsonl or .parquet file to write.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--ridge", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
@click.option("--force", is_flag=True, help="Replace --out if it exists (otherwise an existing file is refused).")
@store_option
def active_select_cmd(run_dir, model_key, dataset_key, budget, rule, pairs, candidates, exclude, out, seed, ridge,
                      force, store_uri) -> None:
    """Write the next pairs to label, with their texts and an empty `winner` column."""
    from embrm.pipeline.active_select import SelectConfig, select_pairs
    from embrm.store import open_store

    r = select_pairs(open_store(store_uri), SelectConfig(rm=run_dir, model_key=model_key, dataset_key=dataset_key,
                                                       budget=budget, out=out, rule=rule, pairs=pairs,
                                                       candidates=candidates, exclude=tuple(exclude), seed=seed,
                                                       ridge=ridge, force=force))
    click.echo(f"pool     {r['pool']} [{r['pool_hash'][:12]}] ({r['kind']}): {r['candidates']} candidate {r['mode']}; "
               f"{r['labelled']} labelled pairs excluded ({r['labelled_in_pool']} found in the pool)")
    click.echo(f"rule     {r['rule']}: selected {r['selected']} in {r['seconds']:.2f} s")
    click.echo(f"wrote    {r['out']}: fill `winner` with a or b, then `embrm extract --dataset {r['out']}` "
               "(same model options as the pool) and `embrm train`")


reproduce.add_command(_compare_cmd)
