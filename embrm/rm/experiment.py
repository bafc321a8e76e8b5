"""Store -> pairs -> trained ensemble -> metrics -> run directory.

The functions behind ``embrm train``, ``embrm eval`` and ``embrm score``. Data comes from
a store entry: multi-response entries with golden rewards get simulated annotators;
pairwise entries use their own chosen/rejected labels.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embrm import methods as registry
from embrm.errors import EmbrmError
from embrm.paths import output_dir, output_file
from embrm.rm.evaluate import evaluate_multi, evaluate_pairs, table
from embrm.rm.metrics import AGGREGATIONS, aggregate, expected_calibration_error
from embrm.rm.pairs import Pairs, build_pairs, split_prompts
from embrm.rm.plots import bon_curves, calibration
from embrm.rm.run import load_run, save_run, write_json
from embrm.rm.trainer import RewardModel, TrainConfig, config_dict, train
from embrm.store.loader import Embeddings


@dataclass
class DataConfig:
    """How training pairs are built from the stored rows."""

    pairs: str = "within"  # within | cross
    pairs_per_prompt: int = 5
    diversity: str = "random"  # random | adjacent | extreme
    annotation_quality: float = -1.0  # beta; < 0 is a perfect annotator
    scale: float | None = None  # s in sigmoid(beta (r_i - r_j) / s); default: reward std
    val_frac: float = 0.2
    seed: int = 0

    def validate(self) -> None:
        if self.pairs_per_prompt < 1:
            raise EmbrmError("--pairs-per-prompt must be at least 1")
        if not math.isfinite(self.annotation_quality):
            raise EmbrmError("--annotation-quality must be a finite number (negative: a perfect annotator)")
        if self.scale is not None and not (math.isfinite(self.scale) and self.scale > 0):
            raise EmbrmError("--scale must be a positive number")


@dataclass
class Dataset:
    """Item embeddings plus what evaluation needs, in one of two forms."""

    x: np.ndarray  # (items, D)
    n_prompts: int
    item_prompt: np.ndarray  # (items,)
    gold: np.ndarray | None = None  # (P, K) for multi-response data
    pairs: Pairs | None = None  # given preferences for pairwise data


def from_embeddings(emb: Embeddings) -> Dataset:
    """Arrange a store entry for training: multi -> (P*K, D) + rewards; pairwise -> pairs."""
    if emb.kind == "multi" or (emb.kind == "pointwise" and np.isfinite(emb.reward).all()):
        v, r = emb.multi()
        if not np.isfinite(r).all():
            raise EmbrmError("multi-response entry has responses without a golden reward; run `embrm annotate` "
                             "or use a dataset with rewards")
        p, k, d = v.shape
        return Dataset(v.reshape(p * k, d), p, np.repeat(np.arange(p), k), gold=r)
    if emb.kind == "pairwise":
        rows = emb.pair_rows()  # (pairs, 2): chosen, rejected; a cross-prompt pair has two prompt ids
        n = len(rows)
        _, prompt_index = np.unique(emb.prompt_id[rows], return_inverse=True)
        prompt_index = prompt_index.reshape(n, 2)
        a, b = np.arange(n) * 2, np.arange(n) * 2 + 1
        cross = bool((prompt_index[:, 0] != prompt_index[:, 1]).any())
        return Dataset(emb.vectors[rows].reshape(2 * n, -1), int(prompt_index.max()) + 1, prompt_index.reshape(-1),
                       pairs=Pairs(a, b, np.ones(n, np.float32), prompt_index[:, 0],
                                   prompt_index[:, 1] if cross else None))
    raise EmbrmError(f"cannot train on a {emb.kind} entry without rewards: use multi-response or pairwise data")


def make_training_pairs(ds: Dataset, dc: DataConfig, prompts: np.ndarray, seed_offset: int = 0,
                        held_out: bool = False) -> Pairs:
    """Pairs over ``prompts``: simulated annotations (multi) or the given ones (pairwise),
    shown in random order so a model cannot learn 'first is better'. A given pair of two
    prompts belongs to training prompts when both are, to held-out ones when either is
    (:meth:`Pairs.among`)."""
    if ds.gold is not None:
        return build_pairs(ds.gold, prompts, dc.pairs_per_prompt, dc.pairs, dc.diversity, dc.annotation_quality,
                           dc.scale, dc.seed + seed_offset)
    assert ds.pairs is not None
    p = ds.pairs.subset(ds.pairs.among(prompts, held_out))
    return p.swapped(np.random.default_rng(dc.seed + seed_offset).random(len(p)) < 0.5)


def evaluate_dataset(model: RewardModel, ds: Dataset, prompts: np.ndarray, ns: list[int] | None = None,
                     coef: float = 1.0, seed: int = 0) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics on the given prompts; returns (metrics, member scores of all items)."""
    scores = model.score(ds.x)
    if ds.gold is not None:
        k = ds.gold.shape[1]
        s = scores.reshape(scores.shape[0], -1, k)[:, prompts]
        return evaluate_multi(s, ds.gold[prompts], ns, coef=coef, seed=seed), scores
    assert ds.pairs is not None
    p = ds.pairs.subset(ds.pairs.among(prompts, held_out=True))
    return evaluate_pairs(scores, p.a, p.b, p.y, coef=coef), scores


def write_outputs(out: Path, metrics: dict[str, Any], scores: np.ndarray, ds: Dataset, prompts: np.ndarray,
                  title: str) -> None:
    """metrics.json, the BoN-curve PNG (multi) and a calibration PNG (mean aggregation).
    The reliability diagram's bins go into metrics.json too, so a viewer (the service's
    page) can draw both curves from that file alone."""
    s = aggregate(scores, "mean")
    if ds.gold is not None:
        bon_curves(metrics, out / "bon.png", title)
        k = ds.gold.shape[1]
        sp, gp = s.reshape(-1, k)[prompts], ds.gold[prompts]
        i, j = np.triu_indices(k, 1)
        sa, sb, ga, gb = sp[:, i].ravel(), sp[:, j].ravel(), gp[:, i].ravel(), gp[:, j].ravel()
        keep = ga != gb
        ece, conf, acc, cnt = expected_calibration_error(sa[keep], sb[keep], (ga > gb)[keep].astype(float))
    else:
        assert ds.pairs is not None
        p = ds.pairs.subset(ds.pairs.among(prompts, held_out=True))
        ece, conf, acc, cnt = expected_calibration_error(s[p.a], s[p.b], p.y)
    calibration(conf, acc, cnt, ece, out / "calibration.png", title)
    metrics["calibration"] = {"aggregation": "mean", "ece": ece, "confidence": conf.tolist(), "frequency": acc.tolist(),
                              "count": cnt.tolist()}
    write_json(out / "metrics.json", metrics)


def train_from_store(store: Any, model_key: str, dataset_key: str, tc: TrainConfig, dc: DataConfig,
                     out: Path | None = None, layer: int | None = None, ns: list[int] | None = None,
                     tune: bool = False, families: tuple[str, ...] | None = None, push: str | None = None
                     ) -> tuple[RewardModel, dict[str, Any]]:
    """Train on a store entry with a prompt-disjoint validation split; write a run directory.

    With ``tune``, the model family and its settings are first chosen on the validation
    split (:mod:`embrm.rm.tune`; ``families`` narrows the search). Validation metrics
    come from a model that has not trained on the validation pairs (for logreg, which
    refits on them, its fit on the training pairs alone). With ``push``, the run is then
    published in ``store`` under that name (from ``out``, or a temporary directory).
    """
    dc.validate()
    if push is not None:
        from embrm.store.registry import check_name

        check_name(push)  # a bad name fails now, not after training
    if out is not None:
        output_dir(out, "the run")  # before minutes of training, not after
    elif push is not None:
        out = Path(tempfile.mkdtemp(prefix="embrm-run-"))
    emb = store.load(model_key, dataset_key, layer=layer)
    ds = from_embeddings(emb)
    train_p, val_p = split_prompts(ds.n_prompts, dc.val_frac, dc.seed)
    tp = make_training_pairs(ds, dc, train_p)
    vp = make_training_pairs(ds, dc, val_p, seed_offset=1000, held_out=True)
    grid: list[dict[str, Any]] | None = None
    if tune:
        from embrm.rm.tune import CRITERION, summary
        from embrm.rm.tune import tune as tune_grid

        tc, grid = tune_grid(ds.x, tp, vp, tc, families=families)
    model = train(ds.x, tp, vp, tc)
    metrics, scores = evaluate_dataset(model.validation_model or model, ds, val_p, ns, seed=dc.seed)
    metrics = {"split": "validation", "train_pairs": len(tp), "val_pairs": len(vp), **metrics}
    if grid is not None:
        metrics["tune"] = {"criterion": CRITERION, "summary": summary(grid),
                           "chosen": {k: v for k, v in config_dict(model.config).items()
                                      if k in ("method", "lr", "weight_decay", "hidden", "l2", "standardize")},
                           "grid": grid}
    if out is not None:
        out = Path(out)
        e = emb.entry
        save_run(out, model, {
            "store": store.uri, "model_hash": e.model_hash, "model_name": e.model_name,
            "embedding": e.model_config,  # how to embed new texts the same way (score --dataset)
            "dataset_hash": e.dataset_hash, "dataset_name": e.dataset_name, "layer": emb.layer,
            "data": asdict(dc), "val_prompts": val_p.tolist(),
        })
        write_outputs(out, metrics, scores, ds, val_p, f"{tc.method} x{tc.ensemble}, beta={dc.annotation_quality}")
        if push is not None:
            metrics["pushed"] = store.push_run(push, out)
    return model, metrics


def eval_from_store(run_dir: Path, store: Any, dataset_key: str, ns: list[int] | None = None,
                    coef: float = 1.0, write: bool = True) -> dict[str, Any]:
    """Evaluate a run on a dataset of the same model. On its own training dataset only the
    held-out prompts are used, so nothing it trained on is scored."""
    model, cfg = load_run(run_dir)
    if write:
        output_dir(run_dir, "the evaluation")
    emb = store.load(cfg["model_hash"], dataset_key, layer=cfg.get("layer"))
    ds = from_embeddings(emb)
    if emb.entry.dataset_hash == cfg["dataset_hash"]:
        prompts, split = np.array(cfg["val_prompts"], dtype=int), "validation"
        if registry.get(cfg["train"]["method"]).refits:
            split = "refitted-on validation"  # logreg's final fit has seen these prompts: not a held-out score
    else:
        prompts, split = np.arange(ds.n_prompts), "all"
    metrics, scores = evaluate_dataset(model, ds, prompts, ns, coef)
    metrics = {"split": split, "dataset_hash": emb.entry.dataset_hash, "dataset_name": emb.entry.dataset_name,
               **metrics}
    if write:
        out = Path(run_dir) / f"eval-{emb.entry.dataset_hash[:12]}"
        out.mkdir(exist_ok=True)
        write_outputs(out, metrics, scores, ds, prompts, f"{cfg['train']['method']} on {emb.entry.dataset_name}")
        metrics["out"] = str(out)
    return metrics


def score_from_store(run_dir: Path, store: Any, dataset_key: str, out: Path, batch_size: int = 16384,
                     force: bool = False, texts: bool = False) -> Path:
    """Write every row's member scores and aggregations (and with ``texts`` its prompt and
    response) to Parquet, streaming the entry: memory is bounded by ``batch_size`` rows,
    never by the entry's size."""
    import pyarrow as pa

    from embrm.store.exporting import write_parquet

    output_file(out, force, "the scores")
    model, cfg = load_run(run_dir)
    e = store.resolve(cfg["model_hash"], dataset_key)

    def tables() -> Any:
        cols = ["item_key", "prompt_id", "response_index", "role"] + (["prompt", "response"] if texts else [])
        for b in store.iter_entry(e.model_hash, e.dataset_hash, layer=cfg.get("layer"), batch_size=batch_size,
                                  columns=cols):
            scores = model.score(b.vectors)
            t = pa.Table.from_batches([b.rows]).drop_columns(["position"])
            for how in AGGREGATIONS:
                t = t.append_column(f"score_{how.replace('-', '_')}", pa.array(aggregate(scores, how)))
            yield t.append_column("member_scores", pa.FixedSizeListArray.from_arrays(
                pa.array(np.ascontiguousarray(scores.T).ravel()), scores.shape[0]))

    return write_parquet(out, tables())


__all__ = ["DataConfig", "Dataset", "eval_from_store", "from_embeddings", "score_from_store", "table",
           "train_from_store"]
