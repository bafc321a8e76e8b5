"""The Ray Data engine: the same plan as the local engine, run by actors across a cluster.

* **Driver** (this process): scans and fingerprints the dataset, pins the model and finds
  the distinct missing item keys, exactly as the local engine does (the same
  :func:`~embrm.extractor.engines.planned.run_planned`). If nothing is missing it returns
  without starting Ray.
  Otherwise it sends each actor the *offsets* of missing items in the dataset's rows table
  (first occurrences only, so no worker ever sees an item twice), never the texts.
* **Workers** are Ray Data actors (``map_batches`` over an ``ActorPoolStrategy``, as in
  Ray's batch-inference examples). Each holds the same
  :class:`~embrm.extractor.embedder.Embedder` as the local engine, reads its rows from the
  store, embeds them, writes the vectors as uncommitted Lance fragments through the
  store's seam and returns only fragment metadata, row counts and keys.
* **The driver is the only committer.** Every ``commit_rows`` rows or ``commit_seconds``
  seconds it commits the fragments it holds as one append, under the store's commit
  lock, after checking row counts and keys (:meth:`~embrm.store.base.Store.commit_fragments`). A
  crash loses at most one commit interval; running the command again computes what is
  missing, and ``embrm store gc`` deletes the files of fragments nobody committed.

Ray's own ``Dataset.write_lance`` is not used: with pylance 14 it fails in every mode
(``storage_options_provider``), and ``lance-ray`` has a report of rows dropped on retries.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import secrets
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embrm.errors import EmbrmError

if TYPE_CHECKING:
    from embrm.extractor.config import ExtractConfig
    from embrm.extractor.embedder import Embedder
    from embrm.extractor.plan import ExtractionPlan
    from embrm.extractor.report import ExtractResult, LoopCounts
    from embrm.store.base import Store

TASK_ROWS = 256  # items per actor call: a few forward batches, one fragment


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a local Ray; "auto": join a running cluster
    num_workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 0.5  # fractional: on a small node, whole CPUs per actor starved Ray Data's own tasks
    commit_rows: int = 4096
    commit_seconds: float = 30.0

    def validate(self) -> None:
        if self.num_workers < 1 or self.gpus_per_worker < 0 or self.cpus_per_worker <= 0:
            raise EmbrmError("--num-workers must be >= 1, --gpus-per-worker >= 0 and --cpus-per-worker > 0")
        if self.commit_rows < 1 or self.commit_seconds <= 0:
            raise EmbrmError("--commit-rows and --commit-seconds must be positive")


def check_ray() -> None:
    """Ray installed? Asked without importing it: Ray reads its environment on import."""
    try:
        found = importlib.util.find_spec("ray") is not None
    except ValueError:  # in sys.modules as None: blocked
        found = False
    if not found:
        raise EmbrmError("--engine ray needs Ray Data: `pip install 'embrm[ray]'`")


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a cluster address nothing answers at (Ray itself retries for minutes)."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise EmbrmError(f"--address {address!r} must be auto or host:port (ray://host:port for a Ray client)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise EmbrmError(f"cannot start or reach Ray at {address} ({e.strerror or e}); check --address") from None


def start_ray(opts: RayOptions) -> Any:
    """Start (or join) Ray. A local Ray listens on loopback only, sends no usage stats and
    writes no auth token to the home directory."""
    if opts.address is None:
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every socket on 127.0.0.1
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
        os.environ.pop("RAY_ADDRESS", None)
    else:
        check_address(opts.address)
    os.environ["RAY_ENABLE_AUTO_CONNECT"] = "0"  # a late Ray call never starts a second cluster
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    check_ray()
    # Ray starts its processes with fork + exec; lance's fork warning does not apply
    warnings.filterwarnings("ignore", message="lance is not fork-safe")
    import ray
    import ray.data

    try:
        if opts.address is None:
            need = opts.num_workers * opts.cpus_per_worker + 1  # one CPU for Ray Data's own tasks
            ray.init(address="local", num_cpus=max(os.cpu_count() or 1, int(np.ceil(need))), include_dashboard=False,
                     _node_ip_address="127.0.0.1", log_to_driver=False, logging_level=logging.WARNING,
                     _temp_dir=tempfile.mkdtemp(prefix="embrm-ray-", dir="/tmp"))
        else:
            ray.init(address=opts.address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise EmbrmError(f"cannot start or reach Ray at {opts.address or 'a new local instance'} "
                         f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__}); check --address") from None
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.execution_options.verbose_progress = False
    ctx.execution_no_progress_timeout_s = 600  # a stalled pipeline becomes an error, not a silent hang
    ctx.raise_original_map_exception = True
    return ray


class EmbedActor:
    """One Ray actor: the local engine's Embedder, reading rows and writing fragments
    through the store's seams."""

    def __init__(self, spec: dict[str, Any], device: str, batch_tokens: int | None, store_uri: str,
                 model_hash: str, dataset_hash: str, rows_version: int):
        from embrm.extractor.embedder import Embedder, EmbeddingSpec
        from embrm.store.backends import open_store
        from embrm.store.vectors import VectorInfo

        spec["layers"] = tuple(spec["layers"])
        self.embedder = Embedder(EmbeddingSpec(**spec), device, batch_tokens).load()
        if self.embedder.model_hash != model_hash:
            raise EmbrmError(f"a worker pinned model {self.embedder.model_hash[:12]}, the driver {model_hash[:12]}: "
                             "workers need the same model files (a shared path or hub cache)")
        self.store = open_store(store_uri)
        self.store.check_engine("ray", "a Ray worker")
        self.model_hash, self.dataset_hash, self.rows_version = model_hash, dataset_hash, rows_version
        self.info = VectorInfo(self.embedder.dim, "float32", tuple(spec["layers"]))
        self.store.prepare_vectors(model_hash, self.info)
        from embrm.extractor.provenance import extraction_facts

        self.provenance = extraction_facts(self.embedder, "ray")

    def __call__(self, batch: pa.Table) -> pa.Table:
        from embrm.store.vectors import build_vector_table

        out: dict[str, list[Any]] = {"fragments": [], "rows": [], "keys": [], "tokens": []}
        for offsets in batch.column("offsets").to_pylist():
            rows = self.store.take_rows(self.dataset_hash, np.array(offsets), ["item_key", "prompt", "response"],
                                        self.rows_version)
            emb = self.embedder.embed(rows.column("prompt").to_pylist(), rows.column("response").to_pylist())
            data = build_vector_table(rows.column("item_key").combine_chunks(), emb.vectors, emb.n_tokens,
                                      emb.truncated, expect=self.info, provenance=self.provenance)
            out["fragments"].append(self.store.write_fragments(self.model_hash, data))
            out["rows"].append(len(data))
            out["keys"].append(rows.column("item_key").to_pylist())
            out["tokens"].append(emb.tokens)
        return pa.table(out)


def task_rows(n_items: int, num_workers: int) -> int:
    """Items per Ray task: ``TASK_ROWS``, or fewer when that would leave fewer than four
    tasks a worker (600 items in tasks of 256 kept one of two workers busy with two thirds
    of them); at least 16, so a task still fills a token-budget batch."""
    return int(max(16, min(TASK_ROWS, -(-n_items // (4 * num_workers)))))


def first_offsets(store: Store, plan: ExtractionPlan) -> tuple[np.ndarray, int]:
    """Offsets (in the rows table) of the first row of every missing item, and how many
    rows repeat an item seen earlier (deduplicated before dispatch)."""
    missing = plan.missing
    seen = np.zeros(len(missing), bool)
    picks: list[np.ndarray] = []
    repeats = 0
    for start, keys in store.stored_row_keys(plan.data.dataset_hash):
        at = pc.fill_null(pc.index_in(keys, value_set=missing), -1).to_numpy()
        rows = np.nonzero(at >= 0)[0]
        uniq, first = np.unique(at[rows], return_index=True)
        new = ~seen[uniq]
        seen[uniq[new]] = True
        picks.append(start + np.sort(rows[first[new]]))
        repeats += len(rows) - int(new.sum())
    return (np.concatenate(picks) if picks else np.zeros(0, np.int64)), repeats


class RayEngine:
    """Plan and commit here, embed on Ray Data actors (see the module docstring)."""

    def __init__(self, opts: RayOptions):
        self.opts = opts
        self.ray: Any = None

    def extract(self, cfg: ExtractConfig, store: Store, on_window: Callable[[int], None] | None = None
                ) -> ExtractResult:
        from embrm.extractor.engines.planned import run_planned

        self.opts.validate()
        if cfg.run.device not in ("auto", self.device):
            raise EmbrmError(f"--device {cfg.run.device} does not apply with --engine ray: workers run on "
                             f"{self.device}, as --gpus-per-worker says")
        check_ray()  # missing Ray is an error before anything is read or written
        store.check_engine("ray", "extraction on Ray")
        return run_planned(self, cfg, store, on_window)

    @property
    def device(self) -> str:
        return "cuda" if self.opts.gpus_per_worker > 0 else "cpu"

    def embedder(self, cfg: ExtractConfig) -> Embedder:
        """The fingerprint the workers will compute under (never loaded here): ``auto``
        dtype is decided for the workers' device, so every worker agrees."""
        from embrm.extractor.embedder import Embedder
        from embrm.extractor.models import resolve_dtype

        dtype = cfg.spec.dtype
        if dtype == "auto":
            dtype = "bfloat16" if self.device == "cuda" else resolve_dtype("auto", "cpu")
        return Embedder(replace(cfg.spec, dtype=dtype), "cpu", cfg.run.batch_tokens)

    @contextlib.contextmanager
    def session(self, embedder: Embedder) -> Iterator[None]:
        self.ray = start_ray(self.opts)
        try:
            yield
        finally:
            self.ray.shutdown()

    def run(self, plan: ExtractionPlan, store: Store, embedder: Embedder, cfg: ExtractConfig,
            on_window: Callable[[int], None] | None) -> LoopCounts:
        from embrm.extractor.report import LoopCounts, progress_bar

        ray, opts, spec = self.ray, self.opts, embedder.spec
        offsets, repeats = first_offsets(store, plan)
        task = task_rows(len(offsets), opts.num_workers)
        chunks = [{"offsets": offsets[s:s + task].tolist()} for s in range(0, len(offsets), task)]
        kwargs = {"spec": {**asdict(spec), "layers": list(spec.layers)}, "device": self.device,
                  "batch_tokens": cfg.run.batch_tokens, "store_uri": store.uri, "model_hash": plan.model_hash,
                  "dataset_hash": plan.data.dataset_hash, "rows_version": store.rows_version(plan.data.dataset_hash)}
        with warnings.catch_warnings():
            # max_restarts=0: a dead worker fails the run (whose rerun computes only what is
            # missing) instead of Ray restarting an actor from arguments it may have lost,
            # which it warns about on stderr. Ray 2.60 takes it only as a (deprecated)
            # free-form remote argument; no named parameter exists yet.
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            results = ray.data.from_items(chunks).map_batches(
                EmbedActor, fn_constructor_kwargs=kwargs, batch_size=1, batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=min(opts.num_workers, len(chunks))),  # no idle actors
                num_cpus=opts.cpus_per_worker, num_gpus=opts.gpus_per_worker or None, max_restarts=0)
        bar = progress_bar(len(offsets), "extract (ray)", cfg.run.quiet, unit="item")
        counts = LoopCounts(cached=plan.data.n_rows - len(offsets) - repeats, duplicates=repeats)
        pending: list[str] = []
        pending_keys: list[list[str]] = []
        last = time.monotonic()
        t_run = time.perf_counter()

        def commit() -> int:
            nonlocal pending, pending_keys, last
            if not pending:
                return 0
            keys = pa.array([k for ks in pending_keys for k in ks], pa.string())
            store.commit_fragments(plan.model_hash, pending, keys)
            pending, pending_keys, last = [], [], time.monotonic()
            if on_window is not None:
                on_window(len(keys))
            return len(keys)

        try:
            for b in results.iter_batches(batch_size=None, batch_format="pyarrow"):
                for frags, keys, tok in zip(b.column("fragments").to_pylist(), b.column("keys").to_pylist(),
                                            b.column("tokens").to_pylist()):
                    pending += frags
                    pending_keys.append(keys)
                    counts.tokens += tok
                    if bar is not None:
                        bar.update(len(keys))
                if sum(map(len, pending_keys)) >= opts.commit_rows or time.monotonic() - last >= opts.commit_seconds:
                    counts.computed += commit()
            counts.computed += commit()
        finally:
            if bar is not None:
                bar.close()
        counts.compute_seconds = time.perf_counter() - t_run
        return counts
