"""The reward models a service serves: run directories given with ``--rm`` and every run
published in its store's registry, picked up without a restart.

A reward for an item is the item's embedding (cached, or computed once through the
model thread) scored by a run's ensemble: a small MLP, so an ensemble of ten costs
almost nothing beside the forward pass. A run is servable only on the embedding it was
trained on: its ``config.json`` names the model fingerprint, layer and dim, and they
must be this service's. ``--rm`` directories that do not fit are refused at start; a
published run that does not fit is listed with the reason and refused when asked for.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embrm import runformat
from embrm.errors import EmbrmError
from embrm.rm.metrics import finite_rewards

if TYPE_CHECKING:
    from embrm.rm.trainer import RewardModel
    from embrm.serve.worker import ItemVectors
    from embrm.store.base import Store


@dataclass
class ServedRun:
    """One reward model as the service knows it."""

    name: str
    source: str  # "dir" (--rm) or "store" (the registry)
    summary: dict[str, Any]
    problem: str | None = None  # why it cannot be served here, or None
    path: Path | None = None  # the run directory (a --rm one, or a pulled copy)
    version: str = ""  # what identifies this copy of a published run (its push time)
    model: RewardModel | None = field(default=None, repr=False)

    @property
    def layer(self) -> int:
        return int(self.summary["layer"])

    def listing(self) -> dict[str, Any]:
        return {**self.summary, "source": self.source, "servable": self.problem is None, "problem": self.problem}


def fit_problem(cfg: dict[str, Any], model_hash: str, layers: tuple[int, ...], dim: int) -> str | None:
    """Why a run cannot score this service's embeddings, or None."""
    fp = runformat.fingerprint(cfg)
    if fp["model_hash"] != model_hash:
        return (f"it was trained on embeddings of model {cfg.get('model_name')} [{str(fp['model_hash'])[:12]}], "
                f"and this service serves [{model_hash[:12]}]")
    if fp["layer"] not in layers:
        return f"it was trained on layer {fp['layer']}, and this service serves layers {list(layers)}"
    if fp["dim"] != dim:
        return f"it was trained on dim {fp['dim']}, and this service's vectors have dim {dim}"
    return None


class RewardModels:
    """The runs a service serves (see the module docstring); safe from any thread."""

    def __init__(self, store: Store, model_hash: str, layers: tuple[int, ...], dim: int,
                 dirs: dict[str, Path] | None = None, poll_seconds: float = 2.0):
        self.store, self.model_hash, self.layers, self.dim = store, model_hash, tuple(layers), dim
        self.poll_seconds = poll_seconds
        self._lock = threading.RLock()
        self._dirs: dict[str, ServedRun] = {}
        self._published: dict[str, ServedRun] = {}
        self._version: int | None = -1
        self._checked = 0.0
        self._cache = Path(tempfile.mkdtemp(prefix="embrm-rms-"))
        self.scorer = Scorer()
        for name, path in (dirs or {}).items():
            cfg = runformat.read_config(path)
            problem = fit_problem(cfg, model_hash, self.layers, dim)
            if problem:
                raise EmbrmError(f"--rm {name}={path}: {problem}; serve it where that model is served, or retrain "
                                 "it on this model's vectors")
            runformat.read_files(path)  # every file checked now, not at the first request
            self._dirs[name] = ServedRun(name, "dir", runformat.summary(name, cfg, _metrics(path)), None, Path(path))

    def close(self) -> None:
        self.scorer.stop()
        shutil.rmtree(self._cache, ignore_errors=True)

    # ------------------------------------------------------------- listing
    def refresh(self, force: bool = False) -> None:
        """Pick up runs pushed to (or replaced in) the store since the last look; a look
        costs one table open, at most every ``poll_seconds``."""
        now = time.monotonic()
        if not force and now - self._checked < self.poll_seconds:
            return
        with self._lock:
            self._checked = now
            version = self.store.runs_version()
            if version == self._version:
                return
            fresh: dict[str, ServedRun] = {}
            for s in self.store.runs():
                old = self._published.get(s["name"])
                if old is not None and old.version == s["pushed_at"]:
                    fresh[s["name"]] = old
                    continue
                problem = fit_problem(s, self.model_hash, self.layers, self.dim)
                fresh[s["name"]] = ServedRun(s["name"], "store", s, problem, version=s["pushed_at"])
            self._published, self._version = fresh, version

    def list(self, fresh: bool = False) -> list[ServedRun]:
        """``--rm`` runs first (in the order given), then published ones by name; a name
        given with ``--rm`` hides a published run of the same name. ``fresh`` looks at
        the registry now: a listing a person asks for shows a run pushed a moment ago."""
        self.refresh(force=fresh)
        with self._lock:
            return [*self._dirs.values(), *(r for n, r in sorted(self._published.items()) if n not in self._dirs)]

    def get(self, name: str | None) -> ServedRun:
        """A servable run, loaded: by name, or the first servable one. Raises
        :class:`LookupError` for an unknown name and :class:`EmbrmError` for one that
        cannot be served here."""
        runs = self.list()
        if name is None:
            run = next((r for r in runs if r.problem is None), None)
            if run is None:
                raise LookupError("this service serves no reward model: start it with --rm RUN_DIR, or push one "
                                  "with `embrm rm push`")
        else:
            run = next((r for r in runs if r.name == name), None)
            if run is None:  # pushed since the last look?
                runs = self.list(fresh=True)
                run = next((r for r in runs if r.name == name), None)
            if run is None:
                known = ", ".join(r.name for r in runs) or "none"
                raise LookupError(f"no reward model named {name!r} here (served: {known}); GET /v1/rms lists them")
        if run.problem is not None:
            raise EmbrmError(f"reward model {run.name!r} cannot be served here: {run.problem}")
        return self._loaded(run)

    def _loaded(self, run: ServedRun) -> ServedRun:
        from embrm.rm.run import load_run

        with self._lock:
            if run.model is None:
                try:
                    if run.path is None:  # a published run: a private copy of its files
                        tag = hashlib.sha256(f"{run.name}\0{run.version}".encode()).hexdigest()[:16]
                        run.path = self.store.pull_run(run.name, self._cache / f"{run.name}-{tag}")
                    run.model, _ = load_run(run.path)
                except EmbrmError as e:  # checked at push, but a store may hold runs from before the check
                    run.problem = str(e)
                    raise
            return run

    # ------------------------------------------------------------- scoring
    def score(self, run: ServedRun, vectors: list[ItemVectors]) -> Future[np.ndarray]:
        """Every member's reward of each item, ``(members, items)`` float32, from the
        scoring thread (which scores concurrent requests' items together)."""
        x = np.stack([v.vectors[run.layer] for v in vectors]).astype(np.float32, copy=False)
        return self.scorer.submit(run, x)


class Scorer:
    """One thread runs the reward heads for every request, items of concurrent requests
    for the same run in one forward pass.

    A head is a few matmuls, and small ones waste much of a CPU core's throughput: on the
    2-core dev machine a 5-member ensemble of the default width (the default ensemble is
    1 member) scored 6,600 items/s at 64 rows a call and 10,900 at 512
    (``benchmarks/bench_reward.py``). So requests queue their
    items here; the thread takes everything queued (up to ``max_items``), scores each
    run's items at once and hands each request its rows.
    Results do not depend on the company a request had (float32, row-independent).
    """

    def __init__(self, max_items: int = 4096):
        self.max_items = max_items
        self._cv = threading.Condition()
        self._queue: list[tuple[ServedRun, np.ndarray, Future[np.ndarray]]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="embrm-rewards", daemon=True)
        self._thread.start()

    def submit(self, run: ServedRun, x: np.ndarray) -> Future[np.ndarray]:
        f: Future[np.ndarray] = Future()
        with self._cv:
            if self._stop:
                raise RuntimeError("the service is shutting down")
            self._queue.append((run, x, f))
            self._cv.notify()
        return f

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(10)

    def _take(self) -> list[tuple[ServedRun, np.ndarray, Future[np.ndarray]]] | None:
        with self._cv:
            while not self._queue and not self._stop:
                self._cv.wait()
            if self._stop and not self._queue:
                return None
            taken, n = [], 0
            while self._queue and (not taken or n + len(self._queue[0][1]) <= self.max_items):
                job = self._queue.pop(0)
                taken.append(job)
                n += len(job[1])
            return taken

    def _run(self) -> None:
        while (jobs := self._take()) is not None:
            by_run: dict[int, list[tuple[ServedRun, np.ndarray, Future[np.ndarray]]]] = {}
            for job in jobs:
                by_run.setdefault(id(job[0]), []).append(job)
            for group in by_run.values():
                run = group[0][0]
                try:
                    assert run.model is not None
                    scores = run.model.score(np.concatenate([x for _, x, _ in group]))
                except BaseException as e:  # a failed batch fails its requests, not the thread
                    for _, _, f in group:
                        f.set_exception(e)
                    continue
                at = 0
                for _, x, f in group:
                    f.set_result(scores[:, at:at + len(x)])
                    at += len(x)


def combine(scores: np.ndarray, how: str, coef: float) -> tuple[np.ndarray, np.ndarray]:
    """(aggregated reward, member std) of ``(members, items)`` scores, every one finite
    (:func:`~embrm.rm.metrics.finite_rewards`: an item that overflows is an error naming it).
    ``how`` was checked at the edge (:data:`embrm.serve.protocol.rewards.Aggregation`)."""
    return finite_rewards(scores, how, coef)


def _metrics(path: Path) -> dict[str, Any] | None:
    p = Path(path) / runformat.METRICS
    return json.loads(p.read_text()) if p.is_file() else None
