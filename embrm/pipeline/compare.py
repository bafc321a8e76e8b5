"""``embrm reproduce compare``: methods x base models under one protocol.

The protocol, the same for every method (built-in or plugged in) and every base model:

* the training set is extracted once per base model, through the store (cached rows are
  never recomputed);
* prompts are dealt into ``--folds`` folds per seed (``folds.csv``: seed, prompt id,
  fold). A prompt's id comes from its text, so every base model sees the same folds;
* in-domain: for each seed and fold, every method trains on the other folds (with a
  prompt-disjoint validation split of them for early stopping and logreg's lambda, from
  the same seed) and scores the fold's pairs. Each trained model's train and test prompt
  sets are recorded as hashes in ``compare.json``, so anyone can check the splits agree;
* held-out: for each seed, every method trains on the whole training set, and the runs
  are benched on ``--suite`` (:mod:`embrm.pipeline.bench`), each on its own base model;
* differences against ``--baseline`` (a method, on the same base model) are paired: the
  same pairs resampled for both, 1,000 times; a method's seeds are averaged per pair
  first.

Writes ``compare.md``, ``compare.json``, ``compare.csv``, ``compare.png``, ``folds.csv`` and
the held-out runs under ``runs/``.
"""
from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embrm.errors import EmbrmError

BOOT = 1000


@dataclass
class CompareConfig:
    methods: tuple[str, ...]
    models: tuple[str, ...]
    train: Any  # a DatasetSpec
    suite: Any | None = None  # a bench Suite; None: in-domain only
    seeds: int = 5
    folds: int = 5
    baseline: str | None = None  # default: the first method
    val_frac: float = 0.2
    embedding: dict[str, Any] = field(default_factory=dict)  # EmbeddingSpec options other than the model

    def validate(self) -> None:
        from embrm import methods

        for m in self.methods:
            methods.get(m)
        if len(set(self.methods)) != len(self.methods) or not self.methods:
            raise EmbrmError("--methods must name each method once")
        if (self.baseline or self.methods[0]) not in self.methods:
            raise EmbrmError(f"--baseline {self.baseline} is not among --methods {','.join(self.methods)}")
        if self.seeds < 1 or self.folds < 2:
            raise EmbrmError("--seeds must be at least 1 and --folds at least 2")


def fold_table(n_prompts: int, folds: int, seed: int) -> np.ndarray:
    """Each prompt's fold for one seed: a seeded shuffle dealt round-robin (sizes differ by
    at most one)."""
    if n_prompts < folds:
        raise EmbrmError(f"{n_prompts} prompts are too few for {folds} folds")
    out = np.empty(n_prompts, int)
    out[np.random.default_rng([seed, 7]).permutation(n_prompts)] = np.arange(n_prompts) % folds
    return out


def split_hash(prompts: np.ndarray) -> str:
    return hashlib.sha1(np.sort(np.asarray(prompts, np.int64)).tobytes()).hexdigest()[:16]


def _outcomes(model: Any, ds: Any, prompts: np.ndarray) -> np.ndarray:
    from embrm.rm.metrics import aggregate

    p = ds.pairs.subset(ds.pairs.among(prompts, held_out=True))
    s = aggregate(model.score(ds.x), "mean")
    d = s[p.a] - s[p.b]  # a stored pair is (chosen, rejected)
    return np.where(d > 0, 1.0, np.where(d == 0, 0.5, 0.0))


def _fit(ds: Any, method: str, seed: int, prompts: np.ndarray, val_frac: float) -> Any:
    """Train ``method`` on ``prompts`` (a validation split of them from ``seed``)."""
    from embrm.rm.experiment import DataConfig, make_training_pairs
    from embrm.rm.pairs import split_prompts
    from embrm.rm.trainer import TrainConfig, train

    tr, va = split_prompts(len(prompts), val_frac, seed)
    dc = DataConfig(seed=seed)
    tp = make_training_pairs(ds, dc, prompts[tr])
    vp = make_training_pairs(ds, dc, prompts[va], seed_offset=1000, held_out=True)
    return train(ds.x, tp, vp, TrainConfig(method=method, seed=seed)), prompts


def _extract(cc: CompareConfig, model: str, store: Any, quiet: bool) -> Any:
    from embrm.extractor.config import ExtractConfig, RunOptions
    from embrm.extractor.embedder import EmbeddingSpec
    from embrm.extractor.extraction import extract

    res = extract(ExtractConfig(cc.train, EmbeddingSpec(model=model, **cc.embedding),
                                RunOptions(store=store.uri, quiet=quiet)), store=store)
    if res.status != "complete":
        raise EmbrmError(f"the extraction of {res.dataset_name} with {model} is {res.status}; run again to finish it")
    return res


def in_domain(ds: Any, cc: CompareConfig, log: Callable[[str], None], tag: str
              ) -> tuple[dict[str, np.ndarray], list[dict[str, Any]], np.ndarray]:
    """Per method: each pair's outcome averaged over seeds (pairs in prompt order), the
    splits used, and the fold table (seeds, prompts)."""
    table = np.stack([fold_table(ds.n_prompts, cc.folds, s) for s in range(cc.seeds)])
    order = np.argsort(ds.pairs.prompt, kind="stable")
    out: dict[str, np.ndarray] = {}
    splits = []
    for method in cc.methods:
        total = np.zeros(len(ds.pairs))
        for seed in range(cc.seeds):
            for k in range(cc.folds):
                test = np.flatnonzero(table[seed] == k)
                trainp = np.flatnonzero(table[seed] != k)
                model, used = _fit(ds, method, seed, trainp, cc.val_frac)
                mask = ds.pairs.among(test, held_out=True)
                total[mask] += _outcomes(model, ds, test)
                splits.append({"model": tag, "method": method, "seed": seed, "fold": k, "train": split_hash(used),
                               "test": split_hash(test), "test_pairs": int(mask.sum())})
        out[method] = (total / cc.seeds)[order]
        log(f"  {tag} {method}: in-domain accuracy {out[method].mean():.3f}")
    return out, splits, table


def paired(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """Mean of ``a - b`` over the same pairs, with a 95% paired bootstrap interval."""
    idx = rng.integers(0, len(a), (BOOT, len(a)))
    d = (a - b)[idx].mean(1)
    return {"diff": float((a - b).mean()), "ci": [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))]}


def _ci(o: np.ndarray, rng: np.random.Generator) -> list[float]:
    m = o[rng.integers(0, len(o), (BOOT, len(o)))].mean(1)
    return [float(np.percentile(m, 2.5)), float(np.percentile(m, 97.5))]


def held_out(ds: Any, cc: CompareConfig, store: Any, out: Path, emb: Any, tag: str, quiet: bool
             ) -> dict[str, dict[str, np.ndarray]]:
    """Per method, per suite subset: each pair's outcome averaged over seeds (runs trained
    on every training prompt, saved under ``runs/`` and benched on the suite)."""
    from dataclasses import asdict

    from embrm.extractor.config import RunOptions
    from embrm.pipeline.bench import dataset_spec, pair_outcomes
    from embrm.pipeline.new_texts import embed_for_run
    from embrm.rm.experiment import DataConfig
    from embrm.rm.run import save_run

    res: dict[str, dict[str, np.ndarray]] = {}
    e = emb.entry
    for method in cc.methods:
        sums: dict[str, np.ndarray] = {}
        for seed in range(cc.seeds):
            model, _ = _fit(ds, method, seed, np.arange(ds.n_prompts), cc.val_frac)
            run = out / "runs" / f"{tag}-{method}-s{seed}"
            save_run(run, model, {"store": store.uri, "model_hash": e.model_hash, "model_name": e.model_name,
                                  "embedding": e.model_config, "dataset_hash": e.dataset_hash,
                                  "dataset_name": e.dataset_name, "layer": emb.layer,
                                  "data": asdict(DataConfig(seed=seed)), "val_prompts": []})
            for sec in cc.suite.sections:
                for sub in sec.subsets:
                    _, dh = embed_for_run(run, dataset_spec(sub), store, RunOptions(store=store.uri, quiet=quiet))
                    o = pair_outcomes(run, store, dh)
                    sums[sub.name] = sums.get(sub.name, 0) + o
        res[method] = {k: v / cc.seeds for k, v in sums.items()}
    return res


def _section(suite: Any, per_subset: dict[str, np.ndarray], idx: dict[str, np.ndarray] | None = None
             ) -> dict[str, float]:
    """Section scores (weighted mean of subset accuracies), optionally on resampled pairs."""
    out = {}
    for sec in suite.sections:
        w = np.array([s.weight for s in sec.subsets])
        accs = [per_subset[s.name][idx[s.name]].mean(-1) if idx else per_subset[s.name].mean()
                for s in sec.subsets]
        out[sec.name] = np.tensordot(w, np.array(accs), 1) / w.sum()
    return out


def summarise(cc: CompareConfig, ind: dict[str, dict[str, np.ndarray]],
              ho: dict[str, dict[str, dict[str, np.ndarray]]] | None, seed: int = 0) -> list[dict[str, Any]]:
    """One leaderboard row per (model, method): in-domain and held-out accuracies with
    intervals, and paired differences against the baseline method on the same model."""
    base = cc.baseline or cc.methods[0]
    rows = []
    for model in ind:
        for method in cc.methods:
            rng = np.random.default_rng(seed)
            o, ob = ind[model][method], ind[model][base]
            row: dict[str, Any] = {"model": model, "method": method, "in_domain": float(o.mean()),
                                   "in_domain_ci": _ci(o, rng), "in_domain_vs_base": paired(o, ob, rng)}
            if ho is not None:
                h, hb = ho[model][method], ho[model][base]
                idx = {k: rng.integers(0, len(v), (BOOT, len(v))) for k, v in h.items()}
                sec, secb = _section(cc.suite, h), _section(cc.suite, hb)
                bs, bsb = _section(cc.suite, h, idx), _section(cc.suite, hb, idx)
                row["held_out"] = {}
                for name in sec:
                    d = bs[name] - bsb[name]
                    row["held_out"][name] = {
                        "accuracy": float(sec[name]),
                        "ci": [float(np.percentile(bs[name], 2.5)), float(np.percentile(bs[name], 97.5))],
                        "vs_base": {"diff": float(sec[name] - secb[name]),
                                    "ci": [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))]}}
            rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], base: str) -> str:
    def iv(v: float, ci: list[float]) -> str:
        return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"

    def dv(d: dict[str, Any]) -> str:
        return f"{d['diff']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"

    secs = list(rows[0].get("held_out", {}))
    head = ["model", "method", "in-domain (CV)", f"vs {base}"] + [x for s in secs for x in (s, f"vs {base}")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], r["method"], iv(r["in_domain"], r["in_domain_ci"]), dv(r["in_domain_vs_base"])]
        for s in secs:
            h = r["held_out"][s]
            cells += [iv(h["accuracy"], h["ci"]), dv(h["vs_base"])]
        lines.append("| " + " | ".join(cells) + " |")
    return ("Pairwise accuracy [95% bootstrap interval]; differences against the baseline are paired "
            "(same pairs, same splits).\n\n" + "\n".join(lines) + "\n")


def write(out: Path, rows: list[dict[str, Any]], doc: dict[str, Any], tables: dict[str, np.ndarray],
          base: str) -> None:
    from embrm.pipeline.compare_plot import plot
    from embrm.rm.run import write_json

    write_json(out / "compare.json", {**doc, "rows": rows})
    (out / "compare.md").write_text(markdown(rows, base))
    flat = []
    for r in rows:
        f = {"model": r["model"], "method": r["method"], "in_domain": r["in_domain"],
             "in_domain_low": r["in_domain_ci"][0], "in_domain_high": r["in_domain_ci"][1],
             "in_domain_vs_base": r["in_domain_vs_base"]["diff"]}
        for s, h in r.get("held_out", {}).items():
            f.update({s: h["accuracy"], f"{s}_low": h["ci"][0], f"{s}_high": h["ci"][1],
                      f"{s}_vs_base": h["vs_base"]["diff"]})
        flat.append(f)
    with open(out / "compare.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(flat[0]))
        w.writeheader()
        w.writerows(flat)
    table = next(iter(tables.values()))
    with open(out / "folds.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["seed", "prompt_id", "fold"])
        for s in range(table.shape[0]):
            w.writerows([s, p, int(k)] for p, k in enumerate(table[s]))
    plot(out / "compare.png", rows)


def compare(cc: CompareConfig, store: Any, out: Path, quiet: bool = False,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole protocol (see the module docstring); returns the JSON document."""
    from embrm.rm.experiment import from_embeddings

    cc.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ind, ho, splits, tables, names = {}, {}, [], {}, {}
    for i, model in enumerate(cc.models):
        res = _extract(cc, model, store, quiet)
        emb = store.load(res.model_hash, res.dataset_hash)
        ds = from_embeddings(emb)
        if ds.pairs is None:
            raise EmbrmError("compare trains on pairwise data (chosen/rejected, A/B, LLMBar records)")
        tag = re.sub(r"[^A-Za-z0-9._-]+", "-", f"m{i + 1}-{res.model_name}")[:60]  # a file name
        names[tag] = {"model": model, "model_hash": res.model_hash, "dataset_hash": res.dataset_hash}
        log(f"{tag}: {len(ds.pairs)} pairs, {ds.n_prompts} prompts")
        ind[tag], sp, tables[tag] = in_domain(ds, cc, log, tag)
        splits += sp
        if cc.suite is not None:
            ho[tag] = held_out(ds, cc, store, out, emb, tag, quiet)
    if len({t.tobytes() for t in tables.values()}) != 1:
        raise EmbrmError("the base models' entries number the training prompts differently; extract the same file")
    base = cc.baseline or cc.methods[0]
    rows = summarise(cc, ind, ho if cc.suite is not None else None)
    doc = {"methods": list(cc.methods), "models": names, "baseline": base, "seeds": cc.seeds, "folds": cc.folds,
           "suite": cc.suite.name if cc.suite is not None else None, "splits": splits}
    write(out, rows, doc, tables, base)
    return {**doc, "rows": rows}
