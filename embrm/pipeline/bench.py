"""``embrm bench RUN... --suite SUITE``: trained runs on held-out sets, RewardBench's way.

A suite is a small TOML file: sections, each a list of subsets (a file, relative to the
data root, or a hub id, with reader options), and weights. Each run is scored on every
subset with its *own* base model's embeddings: what the store lacks is extracted first,
exactly as the run's training data was (:func:`embrm.pipeline.new_texts.embed_for_run`),
so runs on different base models are compared on the same texts.

A subset's score is its pairwise accuracy (the chosen response scores higher under the
mean of the members; a tie counts half). A section's score is the weighted mean of its
subsets' accuracies (RewardBench's manner: a small subset weighs as much as a large one
unless the suite says otherwise); the overall score is the weighted mean of the sections.
Intervals are percentile bootstraps over pairs (1,000 resamples, every subset resampled
independently; a section's interval comes from the same resamples averaged).
"""
from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embrm.errors import EmbrmError

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

DATA_ENV = "EMBRM_DATA"
BOOT = 1000
READER_KEYS = {"split", "config", "limit", "prompt_col", "chosen_col", "rejected_col", "label_col", "winner_col",
               "response_col", "messages_col"}


@dataclass
class Subset:
    name: str
    source: str  # an absolute path, or a hub id
    weight: float = 1.0
    reader: dict[str, Any] = field(default_factory=dict)


@dataclass
class Section:
    name: str
    subsets: list[Subset]
    weight: float = 1.0


@dataclass
class Suite:
    name: str
    sections: list[Section]


def _suite_text(suite: str) -> tuple[str, str]:
    """(TOML text, where) of a suite name (built-in) or a path."""
    p = Path(suite)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise EmbrmError(f"suite file {suite} does not exist")
        return p.read_text(encoding="utf-8"), str(p)
    builtin = Path(__file__).resolve().parents[1] / "data" / f"{suite}.suite.toml"
    if not builtin.is_file():
        raise EmbrmError(f"unknown suite {suite!r}: use heldout, or a .toml file")
    return builtin.read_text(encoding="utf-8"), f"built-in suite {suite}"


def data_root(root: str | None) -> Path:
    """Where a suite's relative files are: --data-root, else $EMBRM_DATA."""
    r = root or os.environ.get(DATA_ENV)
    if not r:
        raise EmbrmError(f"the suite names files relative to a data root: pass --data-root DIR or set ${DATA_ENV} "
                         "(the folder holding llmbar/ and hh-rlhf/)")
    path = Path(r).expanduser()
    if not path.is_dir():
        raise EmbrmError(f"data root {path} is not a directory; pass --data-root DIR or set ${DATA_ENV}")
    return path


def load_suite(suite: str, root: str | None = None, limit: int | None = None) -> Suite:
    """Parse and check a suite; every file must exist under the data root."""
    text, where = _suite_text(suite)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise EmbrmError(f"{where} is not valid TOML ({e})") from None
    sections = doc.get("sections")
    if not isinstance(sections, list) or not sections:
        raise EmbrmError(f"{where}: a suite needs [[sections]], each with a name and subsets")
    base: Path | None = None
    out = []
    for s in sections:
        subs = s.get("subsets") if isinstance(s, dict) else None
        if not isinstance(s.get("name"), str) or not isinstance(subs, list) or not subs:
            raise EmbrmError(f"{where}: every section needs a name and a non-empty list of subsets")
        got = []
        for sub in subs:
            if not isinstance(sub, dict) or not isinstance(sub.get("name"), str) or \
                    ("file" in sub) == ("hub" in sub):
                raise EmbrmError(f"{where}: subset {sub!r:.80} of section {s['name']} needs a name and one of file "
                                 "or hub")
            bad = set(sub) - READER_KEYS - {"name", "file", "hub", "weight"}
            if bad:
                raise EmbrmError(f"{where}: subset {sub['name']} has unknown keys {sorted(bad)}; reader options are "
                                 f"{sorted(READER_KEYS)}")
            if "file" in sub:
                base = base or data_root(root)
                source = base / sub["file"]
                if not source.is_file():
                    raise EmbrmError(f"{where}: subset {sub['name']}: {source} does not exist (is the data root "
                                     "right?)")
                source = str(source)
            else:
                source = sub["hub"]
            reader = {k: v for k, v in sub.items() if k in READER_KEYS}
            if limit is not None:
                reader["limit"] = min(limit, reader.get("limit", limit))
            got.append(Subset(sub["name"], source, float(sub.get("weight", 1.0)), reader))
        out.append(Section(s["name"], got, float(s.get("weight", 1.0))))
    return Suite(str(doc.get("name", Path(where).stem)), out)


def dataset_spec(sub: Subset) -> Any:
    from embrm.extractor.datasets import Columns, DatasetSpec

    r = sub.reader
    cols = Columns(**{k[:-4]: v for k, v in r.items() if k.endswith("_col")})
    return DatasetSpec(sub.source, r.get("split", "train"), r.get("config"), None, r.get("limit"), cols)


def pair_outcomes(run_dir: Path, store: Any, dataset_hash: str) -> np.ndarray:
    """Per pair of a stored pairwise entry: 1 where the run scores the chosen response
    higher (mean of members), 0.5 on a tie, 0 otherwise."""
    from embrm.rm.experiment import from_embeddings
    from embrm.rm.metrics import aggregate
    from embrm.rm.run import load_run

    model, cfg = load_run(run_dir)
    ds = from_embeddings(store.load(cfg["model_hash"], dataset_hash, layer=cfg.get("layer")))
    if ds.pairs is None:
        raise EmbrmError("a bench subset must be pairwise data (chosen/rejected, A/B with a winner, LLMBar)")
    s = aggregate(model.score(ds.x), "mean")
    d = s[ds.pairs.a] - s[ds.pairs.b]
    return np.where(d > 0, 1.0, np.where(d == 0, 0.5, 0.0))


def boot_means(outcomes: np.ndarray, rng: np.random.Generator, n: int = BOOT) -> np.ndarray:
    """``n`` bootstrap means of ``outcomes`` (resampled pairs)."""
    idx = rng.integers(0, len(outcomes), (n, len(outcomes)))
    return outcomes[idx].mean(1)


def _interval(samples: np.ndarray) -> list[float]:
    return [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))]


def summarise(suite: Suite, outcomes: dict[str, np.ndarray], seed: int = 0) -> dict[str, Any]:
    """Accuracy per subset, section (weighted mean of subsets) and overall, with intervals."""
    rng = np.random.default_rng(seed)
    subsets, sections, sec_boot = {}, {}, []
    for sec in suite.sections:
        w = np.array([s.weight for s in sec.subsets])
        boots = []
        for s in sec.subsets:
            o = outcomes[s.name]
            b = boot_means(o, rng)
            boots.append(b)
            subsets[s.name] = {"section": sec.name, "pairs": len(o), "accuracy": float(o.mean()), "ci": _interval(b)}
        acc = float(np.dot(w, [subsets[s.name]["accuracy"] for s in sec.subsets]) / w.sum())
        sb = (w[:, None] * np.stack(boots)).sum(0) / w.sum()
        sec_boot.append(sb)
        sections[sec.name] = {"accuracy": acc, "ci": _interval(sb), "subsets": [s.name for s in sec.subsets]}
    ws = np.array([s.weight for s in suite.sections])
    overall = float(np.dot(ws, [sections[s.name]["accuracy"] for s in suite.sections]) / ws.sum())
    ob = (ws[:, None] * np.stack(sec_boot)).sum(0) / ws.sum()
    return {"subsets": subsets, "sections": sections, "overall": {"accuracy": overall, "ci": _interval(ob)}}


def bench(runs: list[tuple[str, Path]], suite: Suite, store: Any, out: Path, quiet: bool = False,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Score every run on every subset (extracting what the store lacks with the run's own
    base model), write ``bench.md``/``.json``/``.csv`` and ``bench.png``."""
    from embrm.extractor.config import RunOptions
    from embrm.pipeline.new_texts import embed_for_run
    from embrm.rm.run import write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, run_dir in runs:
        outcomes = {}
        for sec in suite.sections:
            for sub in sec.subsets:
                cfg, dh = embed_for_run(run_dir, dataset_spec(sub), store, RunOptions(store=store.uri, quiet=quiet))
                outcomes[sub.name] = pair_outcomes(run_dir, store, dh)
        res = summarise(suite, outcomes)
        res.update(run=str(run_dir), method=cfg["train"]["method"], model_name=cfg.get("model_name"),
                   model_hash=cfg["model_hash"])
        results[name] = res
        log(f"{name} ({res['method']} on {res['model_name']}): overall {res['overall']['accuracy']:.3f}")
    doc = {"suite": suite.name, "sections": [{"name": s.name, "weight": s.weight,
                                              "subsets": [{"name": x.name, "source": x.source, "weight": x.weight,
                                                           **x.reader} for x in s.subsets]}
                                             for s in suite.sections], "runs": results}
    write_json(out / "bench.json", doc)
    (out / "bench.md").write_text(markdown(doc))
    _csv(out / "bench.csv", doc)
    _plot(out / "bench.png", doc)
    return doc


def _rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for run, r in doc["runs"].items():
        levels = (("subset", r["subsets"]), ("section", r["sections"]), ("overall", {"overall": r["overall"]}))
        for level, items in levels:
            for name, v in items.items():
                rows.append({"run": run, "method": r["method"], "model": r["model_name"], "level": level,
                             "name": name, "pairs": v.get("pairs", ""), "accuracy": round(v["accuracy"], 4),
                             "ci_low": round(v["ci"][0], 4), "ci_high": round(v["ci"][1], 4)})
    return rows


def _csv(path: Path, doc: dict[str, Any]) -> None:
    rows = _rows(doc)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def markdown(doc: dict[str, Any]) -> str:
    """Sections and their subsets as rows, runs as columns: accuracy [95% interval]."""
    runs = list(doc["runs"])
    head = "| | " + " | ".join(runs) + " |\n|---|" + "---|" * len(runs) + "\n"

    def cell(v: dict[str, Any]) -> str:
        return f"{v['accuracy']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]"

    lines = []
    for sec in doc["sections"]:
        lines.append(f"| **{sec['name']}** | " + " | ".join(cell(doc["runs"][r]["sections"][sec["name"]])
                                                            for r in runs) + " |")
        for sub in sec["subsets"]:
            n = doc["runs"][runs[0]]["subsets"][sub["name"]]["pairs"]
            lines.append(f"| &nbsp;&nbsp;{sub['name']} ({n}) | " + " | ".join(
                cell(doc["runs"][r]["subsets"][sub["name"]]) for r in runs) + " |")
    lines.append("| **overall** | " + " | ".join(cell(doc["runs"][r]["overall"]) for r in runs) + " |")
    return f"Suite {doc['suite']}: pairwise accuracy [95% bootstrap interval]\n\n" + head + "\n".join(lines) + "\n"


def _plot(path: Path, doc: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    secs = [s["name"] for s in doc["sections"]] + ["overall"]
    runs = list(doc["runs"])
    fig, ax = plt.subplots(figsize=(2 + 1.3 * len(secs), 3.5))
    width = 0.8 / len(runs)
    for i, r in enumerate(runs):
        vals = [doc["runs"][r]["sections"][s] if s != "overall" else doc["runs"][r]["overall"] for s in secs]
        acc = np.array([v["accuracy"] for v in vals])
        err = np.array([[a - v["ci"][0], v["ci"][1] - a] for a, v in zip(acc, vals)]).T
        ax.bar(np.arange(len(secs)) + i * width, acc, width, yerr=err, capsize=3, label=r)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(secs)) + width * (len(runs) - 1) / 2, secs, fontsize=8)
    ax.set_ylabel("pairwise accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"suite {doc['suite']} (95% bootstrap intervals)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
