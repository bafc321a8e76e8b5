"""``embrm train`` and ``embrm eval`` over :mod:`embrm.rm.experiment` (``embrm score`` and
``rerank``, which may embed new texts first, are in :mod:`embrm.pipeline.cli`)."""
from __future__ import annotations

from pathlib import Path

import click

from embrm.options import FINITE, METHOD, NS, SIZES, store_option

STORE = store_option


def ns_list(bon: tuple[int, ...] | None) -> list[int] | None:
    return list(bon) if bon else None


@click.command("train")
@click.option("--model-key", required=True, help="Model name, hash or hash prefix in the store.")
@click.option("--dataset-key", required=True, help="Dataset name, hash or hash prefix in the store.")
@click.option("--method", type=METHOD, default=None,
              help="Model family, or a plug-in as module:attr [default: bt; with --tune: chosen among every "
                   "method with a grid].")
@click.option("--ensemble", type=click.IntRange(min=1), default=1, show_default=True,
              help="Members, trained together.")
@click.option("--annotation-quality", type=FINITE, default=-1.0, show_default=True,
              help="beta of the simulated annotator; negative means perfect.")
@click.option("--pairs", type=click.Choice(["within", "cross"]), default="within", show_default=True)
@click.option("--pairs-per-prompt", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--diversity", type=click.Choice(["random", "adjacent", "extreme"]), default="random", show_default=True)
@click.option("--scale", type=FINITE, default=None, help="s of the annotator (default: reward std).")
@click.option("--bootstrap", is_flag=True, help="Members train on bootstrap resamples.")
@click.option("--hidden", type=SIZES, default="1024,512", show_default=True, help="MLP hidden sizes.")
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True,
              help="At most; early stopping on validation.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Pairs per step (default: adapts to the data, n/16 within 16..1024).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=3e-4, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Decoupled (AdamW) weight decay.")
@click.option("--patience", type=click.IntRange(min=1), default=3, show_default=True,
              help="Epochs without a better validation loss before stopping (after at least 200 steps).")
@click.option("--tune", is_flag=True,
              help="Choose the family (or, with --method, its settings) by validation log-loss first.")
@click.option("--standardize/--no-standardize", default=None,
              help="Standardise features with training-split statistics [default: per method; docs/reward-models.md].")
@click.option("--l2", type=click.FloatRange(min=0, min_open=True), default=None,
              help="logreg's L2 penalty lambda [default: chosen on the validation split].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True,
              help="Where to train (auto: a GPU where torch sees one).")
@click.option("--val-frac", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
              show_default=True, help="Prompts held out for validation.")
@click.option("--layer", type=int, default=None, help="Stored layer to train on (default: the first).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--bon", type=NS, default=None, help="N values for Best-of-N, e.g. 1,2,5,10.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run directory to write.")
@click.option("--push", default=None, metavar="NAME",
              help="Publish the trained run in the store (--store) under NAME: `embrm rm ls` lists it, a service "
                   "serves it.")
@STORE
def train_cmd(model_key, dataset_key, method, ensemble, annotation_quality, pairs, pairs_per_prompt, diversity,
              scale, bootstrap, hidden, epochs, batch_size, lr, weight_decay, patience, tune, standardize, l2, device,
              val_frac, layer, seed, bon, out, push, store_uri) -> None:
    """Train a reward-model ensemble on stored embeddings."""
    from embrm.rm.experiment import DataConfig, table, train_from_store
    from embrm.rm.trainer import TrainConfig
    from embrm.store import open_store

    tc = TrainConfig(method=method or "bt", ensemble=ensemble, hidden=hidden, lr=lr, weight_decay=weight_decay,
                     batch_size=batch_size, max_epochs=epochs, patience=patience, bootstrap=bootstrap, seed=seed,
                     device=device, standardize=standardize, l2=l2)
    dc = DataConfig(pairs=pairs, pairs_per_prompt=pairs_per_prompt, diversity=diversity,
                    annotation_quality=annotation_quality, scale=scale, val_frac=val_frac, seed=seed)
    store = open_store(store_uri)
    model, metrics = train_from_store(store, model_key, dataset_key, tc, dc, Path(out) if out else None, layer,
                                      ns_list(bon), tune=tune, families=(method,) if method else None, push=push)
    if tune:
        click.echo(metrics["tune"]["summary"])
    log, done = model.log, model.config
    how = (f"lambda {done.l2:.3g}, {log.steps} Newton steps" if done.l2 is not None
           else f"{log.epochs} epochs, batch {log.batch_size}")
    refit = f" (+{metrics['val_pairs']} validation pairs in the refit)" if model.validation_model else ""
    click.echo(f"trained {done.method} x{done.ensemble}{' standardised' if done.standardize else ''} on "
               f"{metrics['train_pairs']} pairs{refit} in {log.seconds:.1f} s ({how}); validation "
               f"({metrics['val_pairs']} pairs{', from the fit before the refit' if refit else ''}):")
    click.echo(table(metrics))
    if out:
        click.echo(f"wrote {out}/")
    if push:
        click.echo(f"pushed {push} to {store.uri}")


@click.command("eval")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--dataset-key", required=True)
@click.option("--bon", type=NS, default=None, help="N values, e.g. 1,2,5,10 (default: 1..500 capped at K).")
@click.option("--coef", type=FINITE, default=1.0, show_default=True, help="lambda / beta of mean-var and mean-std.")
@STORE
def eval_cmd(run_dir, dataset_key, bon, coef, store_uri) -> None:
    """Evaluate a trained run on a dataset in the store; print a table and write files."""
    from embrm.rm.experiment import eval_from_store, table
    from embrm.store import open_store

    m = eval_from_store(Path(run_dir), open_store(store_uri), dataset_key, ns_list(bon), coef)
    click.echo(f"{m['dataset_name']} ({m['split']} prompts):")
    click.echo(table(m))
    click.echo(f"wrote {m['out']}/")
