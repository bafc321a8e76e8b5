"""The Ray Data engine: the same plan as the local engine, run by actors across a cluster.

* **Driver** (this process): scans and fingerprints the dataset, pins the model and finds
  the distinct missing item keys, exactly as the local engine does
  (:mod:`embrm.extractor.plan`). If nothing is missing it returns without starting Ray.
  Otherwise it sends each actor the *offsets* of missing items in the dataset's rows table
  (first occurrences only, so no worker ever sees an item twice), never the texts.
* **Workers** are Ray Data actors (``map_batches`` over an ``ActorPoolStrategy``, as in
  Ray's batch-inference examples). Each holds the same
  :class:`~embrm.extractor.embedder.Embedder` as the local engine, reads its rows from the
  store, embeds them, writes the vectors as uncommitted Lance fragments through the
  store's seam and returns only fragment metadata, row counts and keys.
* **The driver is the only committer.** Every ``commit_rows`` rows or ``commit_seconds``
  seconds it commits the fragments it holds as one append, under the store's commit
  lock, after checking row counts and keys (:meth:`Store.commit_vector_fragments`). A
  crash loses at most one commit interval; running the command again computes what is
  missing, and ``embrm store gc`` deletes the files of fragments nobody committed.

Ray's own ``Dataset.write_lance`` is not used: with pylance 14 it fails in every mode
(``storage_options_provider``), and ``lance-ray`` has a report of rows dropped on retries.
"""
from __future__ import annotations

import os
import secrets
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embrm.errors import EmbrmError

if TYPE_CHECKING:
    from embrm.extractor.extraction import ExtractConfig, ExtractResult
    from embrm.extractor.plan import ExtractionPlan
    from embrm.store.store import Store

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
    import importlib.util

    try:
        found = importlib.util.find_spec("ray") is not None
    except ValueError:  # in sys.modules as None: blocked
        found = False
    if not found:
        raise EmbrmError("--engine ray needs Ray Data: `pip install 'embrm[ray]'`")


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a cluster address nothing answers at (Ray itself retries for minutes)."""
    import socket

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
    import logging

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
        from embrm.store.store import open_store
        from embrm.store.vectors import VectorInfo

        spec["layers"] = tuple(spec["layers"])
        self.embedder = Embedder(EmbeddingSpec(**spec), device, batch_tokens).load()
        if self.embedder.model_hash != model_hash:
            raise EmbrmError(f"a worker pinned model {self.embedder.model_hash[:12]}, the driver {model_hash[:12]}: "
                             "workers need the same model files (a shared path or hub cache)")
        self.store = open_store(store_uri)
        self.model_hash, self.dataset_hash, self.rows_version = model_hash, dataset_hash, rows_version
        self.info = VectorInfo(self.embedder.dim, "float32", tuple(spec["layers"]))
        self.store.ensure_vector_table(model_hash, self.info)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from embrm.store.vectors import build_vector_table

        out: dict[str, list[Any]] = {"fragments": [], "rows": [], "keys": [], "tokens": []}
        for offsets in batch.column("offsets").to_pylist():
            rows = self.store.rows_at(self.dataset_hash, np.array(offsets), ["item_key", "prompt", "response"],
                                      self.rows_version)
            emb = self.embedder.embed(rows.column("prompt").to_pylist(), rows.column("response").to_pylist())
            data = build_vector_table(rows.column("item_key").combine_chunks(), emb.vectors, emb.n_tokens,
                                      emb.truncated, expect=self.info)
            out["fragments"].append(self.store.write_vector_fragments(self.model_hash, data))
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
    for start, keys in store.physical_keys(plan.data.dataset_hash):
        at = pc.fill_null(pc.index_in(keys, value_set=missing), -1).to_numpy()
        rows = np.nonzero(at >= 0)[0]
        uniq, first = np.unique(at[rows], return_index=True)
        new = ~seen[uniq]
        seen[uniq[new]] = True
        picks.append(start + np.sort(rows[first[new]]))
        repeats += len(rows) - int(new.sum())
    return (np.concatenate(picks) if picks else np.zeros(0, np.int64)), repeats


def extract_ray(cfg: ExtractConfig, opts: RayOptions, store: Store | None = None) -> ExtractResult:
    """``embrm extract --engine ray``: plan here, embed on Ray actors, commit here."""
    from embrm.extractor.embedder import Embedder
    from embrm.extractor.extraction import finish, progress_bar
    from embrm.extractor.models import resolve_dtype
    from embrm.extractor.plan import plan_extraction, scan_dataset
    from embrm.store import schema as S
    from embrm.store.store import open_store

    t0 = time.perf_counter()
    cfg.validate()
    opts.validate()
    check_ray()  # missing Ray is an error before anything is read or written
    device = "cuda" if opts.gpus_per_worker > 0 else "cpu"
    dtype = cfg.embedding.dtype
    if dtype == "auto":  # decided for the workers' device, so every worker computes the same fingerprint
        dtype = "bfloat16" if device == "cuda" else resolve_dtype("auto", "cpu")
    spec = replace(cfg.embedding, dtype=dtype)
    planner = Embedder(spec, "cpu", cfg.run.batch_tokens)  # fingerprint only: never loaded here
    data = scan_dataset(cfg.data)
    store = store or open_store(cfg.run.store, create=True)
    plan = plan_extraction(data, planner, store)
    n_rows_missing = 0
    if plan.n_missing == 0:
        plan.register(store)
        return finish(plan, store, 0, data.n_rows, 0, 0, 0.0, False, t0)
    ray = start_ray(opts)
    try:
        plan.register(store)
        offsets, repeats = first_offsets(store, plan)
        n_rows_missing = len(offsets) + repeats
        rows_version = store.tables.get(S.dataset_table(data.dataset_hash)).version
        task = task_rows(len(offsets), opts.num_workers)
        chunks = [{"offsets": offsets[s:s + task].tolist()} for s in range(0, len(offsets), task)]
        kwargs = {"spec": {**asdict(spec), "layers": list(spec.layers)}, "device": device,
                  "batch_tokens": cfg.run.batch_tokens, "store_uri": store.uri, "model_hash": plan.model_hash,
                  "dataset_hash": data.dataset_hash, "rows_version": rows_version}
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
        computed = tokens = 0
        pending: list[str] = []
        pending_keys: list[list[str]] = []
        last = time.monotonic()
        t_run = time.perf_counter()

        def commit() -> int:
            nonlocal pending, pending_keys, last
            if not pending:
                return 0
            keys = pa.array([k for ks in pending_keys for k in ks], pa.string())
            store.commit_vector_fragments(plan.model_hash, pending, keys)
            n = len(keys)
            pending, pending_keys, last = [], [], time.monotonic()
            return n

        try:
            for b in results.iter_batches(batch_size=None, batch_format="pyarrow"):
                for frags, keys, tok in zip(b.column("fragments").to_pylist(), b.column("keys").to_pylist(),
                                            b.column("tokens").to_pylist()):
                    pending += frags
                    pending_keys.append(keys)
                    tokens += tok
                    if bar is not None:
                        bar.update(len(keys))
                if sum(map(len, pending_keys)) >= opts.commit_rows or time.monotonic() - last >= opts.commit_seconds:
                    computed += commit()
            computed += commit()
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - t_run
    finally:
        ray.shutdown()
    cached = data.n_rows - n_rows_missing
    return finish(plan, store, computed, cached, n_rows_missing - len(offsets), tokens, seconds, True, t0)
