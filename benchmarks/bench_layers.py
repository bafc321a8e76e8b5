"""Which SmolLM2 layer makes the best reward model on HH-RLHF (``embrm reproduce layers``).

Extracts the HH-RLHF harmless-base test pairs with SmolLM2-135M-Instruct in fp32 at every
4th layer and the last (``--layers 0,4,8,...,28,-1``: 0 is the token embeddings, the model
has 30 layers) in one forward pass, then runs the layer study at each size: a seeded
subset of prompts (or all of them), 5-fold prompt-disjoint cross-validation, each method
trained on every stored layer and on the concatenation and the mean of them all. Prints,
per size and method, the best layer against the last with a paired bootstrap interval
(2,000 resamples of the held-out pairs). Writes ``benchmarks/results/layers.json`` and
the study's own files (``layers.png``, ``.md``, ``.csv``, ``.json``) under ``--out``.
Needs ../shared/data/hh-rlhf.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from embrm.extractor import DatasetSpec, EmbeddingSpec, ExtractConfig, RunOptions, extract
from embrm.pipeline.reproduce_layers import LayersConfig, reproduce_layers
from embrm.store import open_store

from _common import machine_line, table, write_json

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
LAYERS = (0, 4, 8, 12, 16, 20, 24, 28, -1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="benchmarks/.hh-store-layers")
    ap.add_argument("--sizes", default="600,all", help="prompts per study ('all': every prompt)")
    ap.add_argument("--methods", default="logreg,bt")
    ap.add_argument("--members", type=int, default=1)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--combine", default="concat,mean")
    ap.add_argument("--standardize", choices=["default", "yes", "no"], default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/.layers-out")
    ap.add_argument("--json", default="layers.json")
    a = ap.parse_args()
    if not HH.exists():
        raise SystemExit(f"needs {HH}")
    t = time.perf_counter()
    r = extract(ExtractConfig(DatasetSpec(str(HH)), EmbeddingSpec(dtype="float32", layers=LAYERS),
                              RunOptions(store=a.store, quiet=True)))
    print(r.report(), f"({time.perf_counter() - t:.0f} s)", flush=True)
    store = open_store(a.store)
    rows, out = [], {"model": r.model_name, "layers": list(LAYERS), "standardize": a.standardize, "sizes": {}}
    for size in a.sizes.split(","):
        lc = LayersConfig(methods=tuple(a.methods.split(",")), folds=a.folds, members=a.members,
                          combine=tuple(c for c in a.combine.split(",") if c),
                          prompts=None if size == "all" else int(size), seed=a.seed,
                          standardize={"default": None, "yes": True, "no": False}[a.standardize])
        t = time.perf_counter()
        res = reproduce_layers(store, r.model_hash, r.dataset_hash, Path(a.out) / size, lc, log=print)
        res["seconds"] = time.perf_counter() - t
        out["sizes"][size] = res
        last = {x["method"]: x for x in res["rows"] if x["features"] == res["last"]}
        for method, label in res["best"].items():
            best = next(x for x in res["rows"] if x["features"] == label and x["method"] == method)
            combos = {x["features"]: x["mean"] for x in res["rows"] if x["method"] == method and x["layer"] is None}
            rows.append({"prompts": res["prompts"], "pairs": best["units"], "method": method,
                         "last layer": last[method]["mean"], "best layer": label.replace("layer ", ""),
                         "best": best["mean"],
                         "best - last [95% CI]": f"{best['vs_last']:+.3f} [{best['vs_last_ci_low']:+.3f}, "
                                                 f"{best['vs_last_ci_high']:+.3f}]",
                         **{k.replace(" of layers", ""): v for k, v in combos.items()}})
        print("\n".join(res["summary"]), flush=True)
    print()
    print(machine_line())
    print(f"# HH-RLHF harmless-base test, {r.model_name}, layers {','.join(map(str, LAYERS))}; "
          f"{a.folds}-fold prompt-disjoint CV, ensembles of {a.members}; held-out pairwise accuracy")
    print(table(rows))
    print(f"wrote {write_json(a.json, out)} and {a.out}/<size>/layers.*")


if __name__ == "__main__":
    main()
