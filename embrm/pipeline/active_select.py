"""``embrm active select``: the next batch of pairs for real annotators, from a store entry.

A trained run (``embrm train --out RUN``) picks ``budget`` pairs from a pool entry of the
same embedding model by one of the rules of :mod:`embrm.rm.active` (``random`` needs no
run: the cold start, before anything is labelled), and writes them with their texts and
item keys::

    prompt_a, response_a, prompt_b, response_b, winner (empty), key_a, key_b

Annotators fill ``winner`` with ``a`` or ``b``. The filled file is a pairwise dataset
(the two-prompt pair shape of :mod:`embrm.extractor.shapes`): ``embrm extract`` finds
every item cached (the texts are the pool's, so are the item keys) and ``embrm train``
trains on it. ``--exclude`` names files of pairs labelled before, in this shape or as
``prompt``/``chosen``/``rejected``: they are never selected again, and ``dopt-past``
counts their information. Pairs are matched by item keys computed from their texts.

The store is any of a local folder, ``s3://`` or an ``embrm serve`` URL: everything
goes through ``load`` and ``iter_entry``, which all three answer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embrm.errors import EmbrmError
from embrm.paths import output_file
from embrm.rm.active import RIDGE, select
from embrm.rm.pools import MODES, candidate_pool, stored_pairs
from embrm.rm.rules import check_rule

SUFFIXES = (".jsonl", ".parquet")


@dataclass
class SelectConfig:
    rm: str | None  # run directory; None for the random rule
    model_key: str
    dataset_key: str
    budget: int
    out: str
    rule: str = "dopt"
    pairs: str = "within"  # within | cross, for multi-response and pointwise pools
    candidates: int = 200_000  # cross: pairs drawn; within: at most this many, at random
    exclude: tuple[str, ...] = field(default_factory=tuple)
    seed: int = 0
    ridge: float = RIDGE
    force: bool = False  # replace an existing --out (annotators may be filling it: refused otherwise)

    def validate(self) -> None:
        check_rule(self.rule)
        if self.rm is None and self.rule != "random":
            raise EmbrmError(f"rule {self.rule} needs a trained reward model: pass --rm RUN_DIR (only random does not)")
        if self.pairs not in MODES:
            raise EmbrmError(f"unknown pair mode {self.pairs!r}; use within or cross")
        if self.budget < 1 or self.candidates < 1:
            raise EmbrmError("--budget and --candidates must be positive")
        if not self.out.endswith(SUFFIXES):
            raise EmbrmError(f"--out {Path(self.out).name}: use a .jsonl or .parquet file name")
        output_file(self.out, self.force, "the selection")  # before the selection, not after


def _labelled_keys(path: str) -> list[tuple[str, str]]:
    """Item-key pairs of a file of labelled pairs (two-prompt or prompt/chosen/rejected).
    A two-prompt record needs its ``winner`` ('a' or 'b'): a pair nobody labelled is not
    excluded by mistake; a file with no labelled pair at all is refused."""
    from embrm.extractor.datasets import DatasetSpec, iter_records
    from embrm.extractor.shapes import PAIR2, WINNER, Columns
    from embrm.store.keys import item_key

    c = Columns()
    out = []
    for i, rec in enumerate(iter_records(DatasetSpec(path))):
        try:
            if set(PAIR2) <= set(rec):
                won = rec.get(WINNER)
                if not isinstance(won, str) or won.strip().lower() not in ("a", "b"):
                    raise EmbrmError(f"{path} record {i} (line {i + 1}): winner is {repr(won)[:40]}, not 'a' or 'b'; "
                                     "--exclude takes pairs annotators labelled: fill in the winner, or drop the "
                                     "record")
                out.append((item_key(rec["prompt_a"], rec["response_a"]), item_key(rec["prompt_b"], rec["response_b"])))
            else:
                out.append((item_key(rec[c.prompt], rec[c.chosen]), item_key(rec[c.prompt], rec[c.rejected])))
        except (KeyError, AttributeError, TypeError, UnicodeError):
            raise EmbrmError(f"{path} record {i} (line {i + 1}): --exclude takes files of labelled pairs with "
                             "prompt_a, response_a, prompt_b, response_b, winner (what `embrm active select` writes, "
                             "filled in) or prompt, chosen, rejected") from None
    if not out:
        raise EmbrmError(f"{path} holds no labelled pairs; --exclude takes files of pairs labelled before")
    return out


def _check_texts(store: Any, e: Any, layer: int) -> None:
    """A pool must carry its texts: annotators read them, and the filled file is extracted again."""
    b = next(iter(store.iter_entry(e.model_hash, e.dataset_hash, layer=layer, batch_size=1,
                                   columns=["prompt", "response"], limit=1)), None)
    names = [] if b is None else b.rows.schema.names
    if b is None or "prompt" not in names or "response" not in names \
            or b.rows.column("prompt")[0].as_py() is None or b.rows.column("response")[0].as_py() is None:
        raise EmbrmError(f"the pool {e.dataset_name} has no texts (its rows were stored without prompt and response), "
                         "so there is nothing to show annotators: extract the pool from its dataset file")


def _texts(store: Any, e: Any, layer: int, rows: np.ndarray, keys: list[str]) -> dict[int, tuple[str, str]]:
    """(prompt, response) of the given rows of the entry, streamed in dataset order."""
    out: dict[int, tuple[str, str]] = {}
    at = 0
    for b in store.iter_entry(e.model_hash, e.dataset_hash, layer=layer, columns=["item_key", "prompt", "response"]):
        n = b.rows.num_rows
        hit = rows[(rows >= at) & (rows < at + n)].tolist()  # rows are sorted
        if hit:
            cols = {c: b.rows.column(c).to_pylist() for c in ("item_key", "prompt", "response")}
            for i in hit:
                if cols["item_key"][i - at] != keys[i]:
                    raise EmbrmError(f"the entry {e.dataset_name} changed while selecting; run the selection again")
                if cols["prompt"][i - at] is None or cols["response"][i - at] is None:
                    _check_texts(store, e, layer)
                    raise EmbrmError(f"row {i} of the pool {e.dataset_name} has no texts; re-extract the pool")
                out[i] = (cols["prompt"][i - at], cols["response"][i - at])
        at += n
    return out


def select_pairs(store: Any, cfg: SelectConfig) -> dict[str, Any]:
    """Choose and write the batch; returns what was done, for the CLI to print."""
    from embrm.pipeline.files import write_records
    from embrm.rm.run import load_run
    from embrm.runformat import checked_config
    from embrm.store.keys import short

    cfg.validate()
    e = store.resolve(cfg.model_key, cfg.dataset_key)
    rc = checked_config(Path(cfg.rm)) if cfg.rm else {"model_hash": e.model_hash, "dim": e.dim,
                                                   "layer": e.layers[0] if e.layers else None}
    if e.model_hash != rc.get("model_hash"):  # checked before the weights are loaded
        raise EmbrmError(f"the reward model in {cfg.rm} was trained on vectors of {rc.get('model_name')} "
                         f"[{short(str(rc.get('model_hash')))}], but the pool is under {e.model_name} "
                         f"[{short(e.model_hash)}]: select from the model it was trained on, or train a run on this "
                         "model's vectors")
    layer = rc.get("layer")
    if layer is None or layer not in e.layers or rc.get("dim") != e.dim:
        raise EmbrmError(f"the reward model in {cfg.rm} was trained on layer {layer} of dim {rc.get('dim')}; the pool "
                         f"{e.dataset_name} has layers {list(e.layers)} of dim {e.dim}")
    model = load_run(Path(cfg.rm))[0] if cfg.rm else None
    _check_texts(store, e, layer)
    emb = store.load(e.model_hash, e.dataset_hash, layer=layer)
    keys = emb.item_key
    first: dict[str, int] = {}
    canon = np.array([first.setdefault(k, i) for i, k in enumerate(keys)], np.int64)  # one row per item key
    rng = np.random.default_rng(cfg.seed)
    if emb.kind == "pairwise":
        rows = emb.pair_rows()
        a, b, _ = stored_pairs(rows[:, 0], rows[:, 1], rng)
        mode = "stored pairs"
    else:
        a, b = candidate_pool(emb.prompt_id, np.unique(emb.prompt_id), cfg.pairs, cfg.candidates, rng)
        mode = f"{cfg.pairs}-prompt pairs"
    a, b = canon[a], canon[b]
    keep = a != b  # two rows of the same text are no comparison
    a, b = a[keep], b[keep]
    labelled = [p for path in cfg.exclude for p in _labelled_keys(path)]
    la = np.array([first.get(ka, -1) for ka, _ in labelled], np.int64)
    lb = np.array([first.get(kb, -1) for _, kb in labelled], np.int64)
    found = (la >= 0) & (lb >= 0)
    t0 = time.perf_counter()
    pick = select(cfg.rule, model, emb.vectors, a, b, cfg.budget, la[found], lb[found], cfg.seed, cfg.ridge)
    seconds = time.perf_counter() - t0
    texts = _texts(store, e, layer, np.unique(np.concatenate([a[pick], b[pick]])), keys)
    records = [{"prompt_a": texts[i][0], "response_a": texts[i][1], "prompt_b": texts[j][0], "response_b": texts[j][1],
                "winner": "", "key_a": keys[i], "key_b": keys[j]}
               for i, j in zip(a[pick].tolist(), b[pick].tolist())]
    path = write_records(Path(cfg.out), records)
    return {"out": str(path), "pool": e.dataset_name, "pool_hash": e.dataset_hash, "kind": emb.kind, "mode": mode,
            "candidates": int(len(a)), "labelled": len(labelled), "labelled_in_pool": int(found.sum()),
            "selected": len(records), "rule": cfg.rule, "seconds": seconds}


__all__ = ["SelectConfig", "select_pairs"]
