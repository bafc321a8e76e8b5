"""Two base models, one method, the same held-out pairs: model B minus model A per suite
section, with a paired bootstrap 95% interval (1,000 resamples of each subset's pairs).

Reads the held-out runs that ``embrm reproduce compare`` saved under ``OUT/runs`` and
scores them on the suite's subsets from the store (cached vectors; nothing is extracted
when compare ran first). Usage:

    python benchmarks/cross_model.py OUT STORE DATA_ROOT TAG_A TAG_B [--methods M1,M2] [--limit N]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from embrm.extractor.config import RunOptions
from embrm.pipeline.bench import dataset_spec, load_suite, pair_outcomes
from embrm.pipeline.new_texts import embed_for_run
from embrm.store import open_store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("out", "store", "data_root", "tag_a", "tag_b"):
        ap.add_argument(name)
    ap.add_argument("--methods", default=None, help="comma-separated (default: every method the compare ran)")
    ap.add_argument("--suite", default="heldout")
    ap.add_argument("--limit", type=int, default=None)
    a = ap.parse_args()
    st = open_store(a.store)
    suite = load_suite(a.suite, a.data_root, limit=a.limit)
    rng = np.random.default_rng(0)
    methods = a.methods.split(",") if a.methods else json.loads((Path(a.out) / "compare.json").read_text())["methods"]
    for method in methods:
        out = {}
        for tag in (a.tag_a, a.tag_b):
            run = Path(a.out) / "runs" / f"{tag}-{method}-s0"
            for sec in suite.sections:
                for sub in sec.subsets:
                    _, dh = embed_for_run(run, dataset_spec(sub), st, RunOptions(store=st.uri, quiet=True))
                    out[tag, sub.name] = pair_outcomes(run, st, dh)
        for sec in suite.sections:
            diffs = [out[a.tag_b, s.name] - out[a.tag_a, s.name] for s in sec.subsets]
            point = np.mean([d.mean() for d in diffs])  # a section is the mean of its subsets
            boots = np.mean([d[rng.integers(0, len(d), (1000, len(d)))].mean(1) for d in diffs], axis=0)
            print(f"{method:8s} {sec.name:13s} B - A {point:+.3f} "
                  f"[{np.percentile(boots, 2.5):+.3f}, {np.percentile(boots, 97.5):+.3f}]")


if __name__ == "__main__":
    main()
