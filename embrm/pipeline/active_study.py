"""``embrm reproduce active``: the active reward-modeling study on a store entry.

Several selection rules (:mod:`embrm.rm.active`) and seeds side by side, each a run of
:func:`embrm.rm.activeloop.run` on the entry's training prompts, evaluated on held-out
prompts after every round:

* a **multi-response entry with golden rewards**: each round draws prompts, builds
  within- or cross-prompt candidates among their responses, and the simulated annotator
  of :func:`embrm.rm.pairs.annotate` labels what the rule selects (beta, or perfect);
  metrics are exact Best-of-N, Spearman and pairwise accuracy on held-out prompts;
* a **pairwise entry** (human labels): its training pairs are a fixed pool whose labels
  are revealed only when selected; the metric is held-out accuracy against the labels.

Writes ``active.json`` (settings, every round of every run, the summary), ``active.csv``
and ``active.md`` (means with 95% intervals over seeds) and ``active.png`` (each metric
against the number of labels, with 95% bands).
"""
from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embrm.errors import EmbrmError
from embrm.paths import output_dir
from embrm.rm.active import RIDGE
from embrm.rm.activeloop import LoopConfig, run
from embrm.rm.evaluate import evaluate_multi, evaluate_pairs
from embrm.rm.experiment import Dataset, from_embeddings
from embrm.rm.metrics import mean_interval as interval
from embrm.rm.pairs import annotate, split_prompts
from embrm.rm.pools import candidate_pool, stored_pairs
from embrm.rm.rules import RULES, check_rule
from embrm.rm.run import write_json
from embrm.rm.trainer import RewardModel, TrainConfig


@dataclass
class ActiveStudyConfig:
    rules: tuple[str, ...] = RULES
    rounds: int = 20
    per_round: int = 100
    seeds: int = 5
    pairs: str = "within"  # within | cross (multi-response entries)
    annotation_quality: float = -1.0  # beta of the simulated annotator; < 0 perfect
    prompts_per_round: int = 50  # M prompts drawn per round
    candidates: int = 1000  # N candidates per round (within: at most every pair of the M prompts)
    method: str = "bt"
    hidden: tuple[int, ...] = (64,)
    members: int = 4  # ensemble size: disagreement needs two or more; every rule trains the same model
    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 30
    warm_start: bool = False
    holdout: float = 0.2
    ridge: float = RIDGE
    val_frac: float = 0.2  # prompts held out for evaluation (one split for every run)
    split_seed: int = 0

    def validate(self) -> None:
        for r in self.rules:
            check_rule(r)
        if self.rounds < 1 or self.per_round < 1 or self.seeds < 1 or self.prompts_per_round < 1:
            raise EmbrmError("--rounds, --per-round, --seeds and --prompts-per-round must be positive")
        if self.pairs not in ("within", "cross"):
            raise EmbrmError(f"unknown pair mode {self.pairs!r}; use within or cross")
        from embrm import methods

        if methods.get(self.method).tune_kind != "adam":
            adam = ", ".join(n for n in methods.names() if methods.get(n).tune_kind == "adam")
            raise EmbrmError(f"the active study trains by the AdamW loop, which {self.method} does not use; pick "
                             f"one of {adam}")
        if "disagreement" in self.rules and self.members < 2:
            raise EmbrmError("the disagreement rule needs an ensemble: --members 2 or more")


@dataclass
class Study:
    """What one entry gives the loop: items, prompts, and the per-round functions' makings."""

    ds: Dataset
    train_prompts: np.ndarray
    held_out: np.ndarray
    primary: str  # the metric the summary compares rules on


def _study(ds: Dataset, cfg: ActiveStudyConfig) -> Study:
    train_p, held = split_prompts(ds.n_prompts, cfg.val_frac, cfg.split_seed)
    return Study(ds, train_p, held, "spearman" if ds.gold is not None else "pair_acc")


def round_functions(st: Study, cfg: ActiveStudyConfig, seed: int, ns: list[int] | None
               ) -> tuple[Callable[[int], tuple[np.ndarray, np.ndarray]],
                          Callable[[np.ndarray, np.ndarray, int], np.ndarray], Callable[[RewardModel], dict[str, Any]]]:
    """candidates(round), label(a, b, round) and evaluate(model) for one seed."""
    ds = st.ds
    if ds.gold is not None:
        gold, flat = ds.gold, ds.gold.reshape(-1)
        k = gold.shape[1]
        scale = float(np.nanstd(gold)) or 1.0
        held_items = (st.held_out[:, None] * k + np.arange(k)).reshape(-1)

        def candidates(r: int) -> tuple[np.ndarray, np.ndarray]:
            rng = np.random.default_rng([seed, r])
            prompts = rng.choice(st.train_prompts, min(cfg.prompts_per_round, len(st.train_prompts)), replace=False)
            return candidate_pool(ds.item_prompt, prompts, cfg.pairs, cfg.candidates, rng)

        def label(a: np.ndarray, b: np.ndarray, r: int) -> np.ndarray:
            return annotate(flat[a], flat[b], cfg.annotation_quality, scale, seed=seed * 100_003 + r + 7)

        def evaluate(model: RewardModel) -> dict[str, Any]:
            s = model.score(ds.x[held_items]).reshape(-1, len(st.held_out), k)
            m = evaluate_multi(s, gold[st.held_out], ns, aggregations=("mean",), seed=cfg.split_seed)
            a = m["aggregations"]["mean"]
            return {**{f"bon@{n}": v for n, v in zip(m["N"], a["bon"])}, "spearman": a["spearman"],
                    "pair_acc": a["pairwise_accuracy"]}

        return candidates, label, evaluate
    assert ds.pairs is not None
    pool = ds.pairs.subset(ds.pairs.among(st.train_prompts))
    test = ds.pairs.subset(ds.pairs.among(st.held_out, held_out=True))
    if not len(pool) or not len(test):
        raise EmbrmError("the pairwise entry has too few prompts for a pool and a held-out set")
    pa, pb, _ = stored_pairs(pool.a, pool.b, np.random.default_rng(seed))
    chosen = np.zeros(len(ds.x), bool)
    chosen[np.where(ds.pairs.y > 0.5, ds.pairs.a, ds.pairs.b)] = True

    def candidates_fixed(r: int) -> tuple[np.ndarray, np.ndarray]:
        if cfg.candidates and cfg.candidates < len(pa):
            keep = np.sort(np.random.default_rng([seed, r]).choice(len(pa), cfg.candidates, replace=False))
            return pa[keep], pb[keep]
        return pa, pb

    def reveal(a: np.ndarray, b: np.ndarray, r: int) -> np.ndarray:
        return chosen[a].astype(np.float32)

    def evaluate_pool(model: RewardModel) -> dict[str, Any]:
        items, inv = np.unique(np.concatenate([test.a, test.b]), return_inverse=True)
        s = np.zeros((model.members, len(ds.x)), np.float32)
        s[:, items] = model.score(ds.x[items])
        return {"pair_acc": evaluate_pairs(s, test.a, test.b, test.y, aggregations=("mean",))
                ["aggregations"]["mean"]["pairwise_accuracy"]}

    return candidates_fixed, reveal, evaluate_pool


def run_study(ds: Dataset, cfg: ActiveStudyConfig, ns: list[int] | None = None,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every rule under every seed; returns ``{"config", "primary", "rows", "summary", "vs_random"}``."""
    cfg.validate()
    st = _study(ds, cfg)
    tc = TrainConfig(method=cfg.method, ensemble=cfg.members, hidden=cfg.hidden, lr=cfg.lr,
                     weight_decay=cfg.weight_decay, max_epochs=cfg.epochs)
    rows: list[dict[str, Any]] = []
    for seed in range(cfg.seeds):
        fns = round_functions(st, cfg, seed, ns)
        for rule in cfg.rules:
            lc = LoopConfig(rule=rule, rounds=cfg.rounds, per_round=cfg.per_round, warm_start=cfg.warm_start,
                            holdout=cfg.holdout, ridge=cfg.ridge, seed=seed)
            got = run(ds.x, *fns, tc, lc, ds.item_prompt)
            rows += got
            last = got[-1]
            log(f"  seed {seed} {rule:<12} {last['labels']} labels: {st.primary} {last[st.primary]:.4f} "
                f"(select {sum(r['select_s'] for r in got):.1f} s, train {sum(r['train_s'] for r in got):.1f} s)")
    metrics = [k for k in rows[0] if k.startswith("bon@") or k in ("spearman", "pair_acc")]
    summary = summarise(rows, metrics)
    return {"config": asdict(cfg), "kind": "simulated" if ds.gold is not None else "labelled pool",
            "primary": st.primary, "metrics": metrics, "train_prompts": len(st.train_prompts),
            "held_out_prompts": len(st.held_out), "rows": rows, "summary": summary,
            "vs_random": vs_random(rows, st.primary) if "random" in cfg.rules else {}}


def summarise(rows: list[dict[str, Any]], metrics: list[str]) -> list[dict[str, Any]]:
    """Per (rule, labels): each metric's mean and 95% half-width over seeds."""
    out = []
    for rule in dict.fromkeys(r["rule"] for r in rows):
        for n in sorted({r["labels"] for r in rows if r["rule"] == rule}):
            sel = [r for r in rows if r["rule"] == rule and r["labels"] == n]
            rec: dict[str, Any] = {"rule": rule, "labels": n, "seeds": len(sel)}
            for m in metrics:
                rec[m], rec[f"{m}_ci"] = interval(np.array([r[m] for r in sel]))
            out.append(rec)
    return out


def _by_seed(rows: list[dict[str, Any]], rule: str, metric: str) -> tuple[list[int], np.ndarray]:
    """(budgets, values (seeds, budgets)) of one rule."""
    budgets = sorted({r["labels"] for r in rows if r["rule"] == rule})
    seeds = sorted({r["seed"] for r in rows if r["rule"] == rule})
    v = {(r["seed"], r["labels"]): r[metric] for r in rows if r["rule"] == rule}
    return budgets, np.array([[v[(s, n)] for n in budgets] for s in seeds], float)


def vs_random(rows: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """For each rule against random, on ``metric``: the fewest labels at which the rule's
    mean reaches random's final mean (and that as a share of random's labels), and per
    budget the paired difference (same seed: same first batch, candidates and split) with
    its 95% interval."""
    budgets, base = _by_seed(rows, "random", metric)
    target = float(np.nanmean(base[:, -1]))
    out: dict[str, Any] = {"metric": metric, "random_final": target, "random_labels": budgets[-1], "rules": {}}
    for rule in dict.fromkeys(r["rule"] for r in rows):
        if rule == "random":
            continue
        b, v = _by_seed(rows, rule, metric)
        if b != budgets:
            continue
        mean = np.nanmean(v, 0)
        reach = next((n for n, m in zip(b, mean) if m >= target), None)
        diffs = [interval(v[:, i] - base[:, i]) for i in range(len(b))]
        out["rules"][rule] = {
            "labels_to_reach_random_final": reach,
            "share_of_random_labels": None if reach is None else reach / budgets[-1],
            "diff": [d[0] for d in diffs], "diff_ci": [d[1] for d in diffs],
            "budgets_below_random": [n for n, (d, c) in zip(b, diffs) if d + c < 0],
            "budgets_above_random": [n for n, (d, c) in zip(b, diffs) if d - c > 0],
            "mean_at_or_above_random_every_budget": bool(all(d >= 0 for d, _ in diffs)),
        }
    return out


def markdown(result: dict[str, Any], shown: int = 8) -> str:
    """Tables: the primary metric by budget (mean +- 95%), then each rule against random."""
    rules = list(dict.fromkeys(r["rule"] for r in result["summary"]))
    budgets = sorted({r["labels"] for r in result["summary"]})
    pick = sorted(set(np.linspace(0, len(budgets) - 1, min(shown, len(budgets))).round().astype(int)))
    by = {(r["rule"], r["labels"]): r for r in result["summary"]}
    lines = []
    for metric in result["metrics"][-3:] if result["primary"] == "spearman" else result["metrics"]:
        lines += [f"{metric} on held-out prompts (mean +- 95% interval over {result['config']['seeds']} seeds)", "",
                  "| labels | " + " | ".join(rules) + " |", "|---" * (len(rules) + 1) + "|"]
        for i in pick:
            n = budgets[i]
            lines.append(f"| {n} | " + " | ".join(
                f"{by[(r, n)][metric]:.3f} +- {by[(r, n)][metric + '_ci']:.3f}" if (r, n) in by else "-"
                for r in rules) + " |")
        lines.append("")
    vr = result.get("vs_random") or {}
    if vr.get("rules"):
        lines += [f"against random ({vr['metric']}; random's final {vr['random_final']:.3f} at {vr['random_labels']} "
                  "labels; differences paired by seed, 95% intervals)", "",
                  "| rule | labels to reach random's final | share | mean >= random at every budget "
                  "| budgets significantly below | significantly above |", "|---|---|---|---|---|---|"]
        for rule, v in vr["rules"].items():
            reach = "never" if v["labels_to_reach_random_final"] is None else str(v["labels_to_reach_random_final"])
            share = "-" if v["share_of_random_labels"] is None else f"{v['share_of_random_labels']:.0%}"
            every = "yes" if v["mean_at_or_above_random_every_budget"] else "no"
            lines.append(f"| {rule} | {reach} | {share} | {every} | {len(v['budgets_below_random'])} of {len(budgets)} "
                         f"| {len(v['budgets_above_random'])} of {len(budgets)} |")
    return "\n".join(lines).rstrip() + "\n"


def figure(result: dict[str, Any], path: Path, title: str = "") -> Path:
    """One panel per metric (BoN at the largest N, Spearman, pairwise accuracy), a line per
    rule against the number of labels, bands of 95% intervals over seeds."""
    from embrm.rm.plots import pyplot

    plt = pyplot()
    metrics = [m for m in result["metrics"] if not m.startswith("bon@")]
    bons = [m for m in result["metrics"] if m.startswith("bon@")]
    metrics = bons[-1:] + metrics
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.8), dpi=120, squeeze=False)
    rules = list(dict.fromkeys(r["rule"] for r in result["summary"]))
    names = {"spearman": "Spearman (per prompt)", "pair_acc": "pairwise accuracy"}
    for ax, metric in zip(axes[0], metrics):
        for i, rule in enumerate(rules):
            rs = [r for r in result["summary"] if r["rule"] == rule]
            n = np.array([r["labels"] for r in rs])
            m, c = np.array([r[metric] for r in rs]), np.array([r[metric + "_ci"] for r in rs])
            ax.plot(n, m, marker="o", ms=2.5, color=f"C{i}", label=rule)
            ax.fill_between(n, m - c, m + c, color=f"C{i}", alpha=0.15)
        ax.set_xlabel("labelled pairs")
        ax.set_ylabel(names.get(metric, f"golden reward of best-of-{metric[4:]}"))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle((title + "\n" if title else "") + "bands: 95% intervals over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(result: dict[str, Any], out: Path, title: str = "") -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "active.json", result)
    with open(out / "active.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(result["summary"][0]))
        w.writeheader()
        w.writerows(result["summary"])
    (out / "active.md").write_text(markdown(result))
    figure(result, out / "active.png", title)


def reproduce_active(store: Any, model_key: str, dataset_key: str, out: Path, cfg: ActiveStudyConfig,
                     ns: list[int] | None = None, layer: int | None = None,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """The study on a store entry; writes ``active.png``/``.md``/``.csv``/``.json`` to ``out``."""
    cfg.validate()
    output_dir(out, "the study")  # before the rounds, not after
    emb = store.load(model_key, dataset_key, layer=layer)
    ds = from_embeddings(emb)
    result = run_study(ds, cfg, ns, log)
    e = emb.entry
    result["entry"] = {"model_hash": e.model_hash, "model_name": e.model_name, "dataset_hash": e.dataset_hash,
                       "dataset_name": e.dataset_name, "layer": emb.layer}
    pairs = cfg.pairs if ds.gold is not None else "stored pairs"
    quality = ("perfect" if cfg.annotation_quality < 0 else f"beta={cfg.annotation_quality:g}") \
        if ds.gold is not None else "human labels"
    write_outputs(result, Path(out), f"{e.dataset_name}: {pairs}, {quality}, {cfg.method} x{cfg.members}")
    return result


__all__ = ["ActiveStudyConfig", "Study", "markdown", "reproduce_active", "round_functions", "run_study", "summarise",
           "vs_random"]
