"""A real writer process for crash and concurrency tests of the store.

Writes N pairwise rows with vectors derived from each item key (so a test can check
every value), in chunks, skipping items already stored, exactly as the extractor does.
Usage: python store_writer.py STORE N CHUNK SLEEP_S
"""
from __future__ import annotations

import hashlib
import sys
import time

import numpy as np

from embrm.store import item_key, open_store

MODEL = "a" * 64
DATASET = "d" * 64
DIM = 16


def vector_for(key: str) -> np.ndarray:
    seed = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def rows(n: int):
    for i in range(n):
        p, r = f"prompt {i // 2}", f"response {i}"
        yield {"position": i, "item_key": item_key(p, r), "prompt_id": i // 2, "response_index": i % 2,
               "role": "chosen" if i % 2 == 0 else "rejected", "label": None, "reward": None,
               "prompt": p, "response": r}


def main() -> None:
    uri, n, chunk, sleep_s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    store = open_store(uri, create=True)
    store.rows.write(DATASET, rows(n), n)
    store.begin_entry(MODEL, "writer-model", {}, DATASET, "writer-data", {}, "pairwise", n)
    keys = [r["item_key"] for r in rows(n)]
    missing = store.vectors.missing(MODEL, keys).to_pylist()
    print(f"missing {len(missing)}", flush=True)
    for s in range(0, len(missing), chunk):
        part = missing[s:s + chunk]
        vecs = np.stack([vector_for(k) for k in part])
        store.writer.write(MODEL, part, {-1: vecs}, np.full(len(part), 7), np.zeros(len(part), bool))
        print(f"wrote {s + len(part)}", flush=True)
        time.sleep(sleep_s)
    e = store.finish_entry(MODEL, DATASET)
    print(f"done {e.status} {e.rows}", flush=True)


if __name__ == "__main__":
    main()
