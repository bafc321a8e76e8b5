"""Reward-model trainers on embeddings: BT-MLP, CLF-MLP, linear BT, logistic regression, LightGBM.

The training loop is written out here, not hidden in a framework:

* all ensemble members train together as one :class:`EnsembleMLP` (one batched
  matmul per layer);
* each member has its own seed: its own initialisation and its own order of pairs, or a
  bootstrap resample of them when asked;
* matmuls run in bfloat16 on CPUs with native bf16: the embeddings are cast once,
  before the first epoch, and each step gathers its rows already in bf16 (the master
  weights, the optimiser and the loss stay fp32);
* each pair is seen once per epoch in one orientation (the Siamese BT loss is symmetric,
  so the seed code's second ordering adds nothing but time);
* early stopping on validation loss, per member: each keeps its best epoch's weights;
* features are standardised first where the method (or the caller) says so, with
  statistics of the training items only (:mod:`embrm.rm.standardize`).

Logistic regression is solved exactly instead (:mod:`embrm.rm.logreg`).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from embrm import methods as registry
from embrm.errors import EmbrmError
from embrm.hardware import cpu_has_fast_bf16, resolve_device
from embrm.rm.models import EnsembleMLP
from embrm.rm.optim import MemberAdamW
from embrm.rm.pairs import Pairs
from embrm.rm.standardize import Standardizer

# Methods, and whether each standardises its features unless told otherwise
# (--standardize / --no-standardize), are objects in one registry: embrm.methods
# (the built-in ones in embrm.rm.methods).


# The batch adapts to the data (see batch_for): at least MIN_STEPS_PER_EPOCH optimiser
# steps an epoch, so a few hundred pairs are not one Adam step an epoch, and at most
# MAX_BATCH rows, the size measured fastest per pair on large data.
MIN_BATCH, MAX_BATCH, MIN_STEPS_PER_EPOCH = 16, 1024, 16
# Early stopping waits for at least this many optimiser steps before it may stop.
MIN_STEPS = 200


@dataclass
class TrainConfig:
    """Every training setting; saved to ``config.json`` of a run."""

    method: str = "bt"
    ensemble: int = 1
    hidden: tuple[int, ...] = (1024, 512)
    lr: float = 3e-4  # on 300-1,200 real HH-RLHF pairs 1e-3 overshot (benchmarks/bench_small_data.py)
    weight_decay: float = 0.0  # decoupled (AdamW)
    batch_size: int | None = None  # None: adapts to the number of training pairs (batch_for)
    max_epochs: int = 30
    patience: int = 3  # epochs without a better validation loss, once MIN_STEPS steps are done
    bootstrap: bool = False
    seed: int = 0
    bf16: bool | None = None  # None: where the CPU has native bf16 matmul
    member_group: int = 0  # members per batched matmul; 0: as many as fit the CPU cache
    lgbm_rounds: int = 500
    device: str = "auto"  # auto: cuda, else mps, where torch sees one; else cpu (hardware.resolve_device)
    standardize: bool | None = None  # None: the method's default (its ``standardize``)
    l2: float | None = None  # logreg's lambda; None: chosen on the validation split (logreg.LAMBDAS)

    @property
    def standardizes(self) -> bool:
        return bool(registry.get(self.method).standardize) if self.standardize is None else self.standardize

    def validate(self) -> None:
        registry.get(self.method)  # an unknown method: one line naming the known ones
        if self.ensemble < 1:
            raise EmbrmError("--ensemble must be at least 1")
        if (self.batch_size is not None and self.batch_size < 1) or self.max_epochs < 1 or self.lr <= 0 \
                or self.member_group < 0 or self.patience < 1:
            raise EmbrmError("batch size, epochs, patience and learning rate must be positive")
        if self.weight_decay < 0:
            raise EmbrmError("--weight-decay must not be negative")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise EmbrmError(f"unknown device {self.device!r}; use auto, cpu, cuda or mps")
        if self.l2 is not None and not self.l2 > 0:
            raise EmbrmError(f"the L2 penalty must be positive, got {self.l2:g}")


def net_shape(cfg: TrainConfig) -> tuple[tuple[int, ...], bool]:
    """Hidden sizes and whether there are biases, as the method says (linear methods have
    no hidden layer, and a Bradley-Terry linear model no bias)."""
    return registry.get(cfg.method).net_shape(cfg)


def batch_for(n_pairs: int, cfg: TrainConfig) -> int:
    """The minibatch size: as given, else ``n_pairs / 16`` clipped to [16, 1024].

    Why: with a fixed batch of 1024, a training set of a few hundred pairs was one Adam
    step an epoch, and early stopping ended runs after 4-7 steps at a validation loss of
    about ln 2 (barely trained). Sixteen steps an epoch keep small sets training.
    """
    if cfg.batch_size:
        return cfg.batch_size
    return int(min(MAX_BATCH, max(MIN_BATCH, n_pairs // MIN_STEPS_PER_EPOCH)))


@dataclass
class TrainLog:
    epochs: int = 0
    best_epoch: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    batch_size: int = 0
    steps: int = 0
    val_pair_loss: list[float] = field(default_factory=list)  # Bradley-Terry log-loss at the kept epoch
    l2_path: list[dict[str, float]] = field(default_factory=list)  # logreg: validation loss of each lambda


@dataclass
class RewardModel:
    """A trained ensemble. :meth:`score` gives ``(members, items)`` rewards of raw embeddings
    (standardising them first where the run was trained on standardised features)."""

    config: TrainConfig
    dim: int
    net: EnsembleMLP | None = None
    boosters: list[Any] | None = None
    state: Any = None  # a plug-in method's own model, where it is neither a net nor boosters
    log: TrainLog = field(default_factory=TrainLog)
    standardizer: Standardizer | None = None
    # The model that validation metrics describe, where it is not this one: logreg refits
    # on training + validation, so its validation pairs are no longer held out.
    validation_model: RewardModel | None = field(default=None, repr=False)

    @property
    def members(self) -> int:
        return self.config.ensemble

    def score(self, x: np.ndarray, chunk: int = 16384) -> np.ndarray:
        """Rewards of each item under each member, ``(M, N)`` float32."""
        x = check_embeddings(x, "embeddings")
        if x.shape[1] != self.dim:
            raise EmbrmError(f"embeddings have dim {x.shape[1]} but the reward model was trained on dim {self.dim}")
        out = np.empty((self.members, len(x)), np.float32)
        method = registry.get(self.config.method)
        for s in range(0, len(x), chunk):  # chunks: a standardised copy is never bigger than one
            xb = np.ascontiguousarray(x[s:s + chunk], dtype=np.float32)
            if self.standardizer is not None:
                xb = self.standardizer.apply(xb)
            out[:, s:s + chunk] = method.score(self, xb)
        return out


def check_embeddings(x: np.ndarray | torch.Tensor, what: str) -> np.ndarray | torch.Tensor:
    """A 2-D array of finite values (numpy, or a torch tensor already on the training device)."""
    if not isinstance(x, torch.Tensor):
        x = np.asarray(x)
    if x.ndim != 2:
        raise EmbrmError(f"{what} must be a 2-D (items, dim) array, got shape {tuple(x.shape)}")
    finite = bool(torch.isfinite(x).all()) if isinstance(x, torch.Tensor) else bool(np.isfinite(x).all())
    if not finite:
        raise EmbrmError(f"{what} contain NaN or inf; re-extract or drop those rows")
    return x


def _use_bf16(flag: bool | None, device: str = "cpu") -> bool:
    """bf16 matmuls where they are native: a CPU with AMX/AVX512-BF16, a GPU that has them."""
    if flag is not None:
        return flag
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    return device == "cpu" and cpu_has_fast_bf16()


def _bt_loss(ra: torch.Tensor, rb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(ra - rb, y, reduction="none").mean(1)


def _pair_loss(ra: torch.Tensor, rb: torch.Tensor, y: torch.Tensor, clf: torch.Tensor | None) -> torch.Tensor:
    """Per-member mean loss, (M,), from fp32 rewards ``ra``, ``rb`` (M, B) and labels ``y``.

    ``clf`` (M,) bool marks the members trained as CLF (each response alone: winner 1,
    loser 0), the rest Bradley-Terry; ``None``: all Bradley-Terry. A grid can thus train
    both losses in one batched ensemble.
    """
    bt = _bt_loss(ra, rb, y)
    if clf is None:
        return bt
    pointwise = (F.binary_cross_entropy_with_logits(ra, y, reduction="none")
                 + F.binary_cross_entropy_with_logits(rb, 1 - y, reduction="none")).mean(1) / 2
    return torch.where(clf, pointwise, bt)


def _step_loss(net: EnsembleMLP, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, y: torch.Tensor,
               clf: torch.Tensor | None, group: int | None) -> torch.Tensor:
    """Per-member loss on one minibatch; ``a``, ``b``, ``y``: (M, B), one row of pairs per member.

    Both sides of every pair go through the net as one (M, 2B) batch of rows of ``x``,
    gathered group by group, already in ``x``'s compute dtype.
    """
    r = net.forward_rows(x, torch.cat([a, b], 1), group).float()
    return _pair_loss(r[:, : a.shape[1]], r[:, a.shape[1]:], y, clf)


class _Validation:
    """Validation loss of every member, scoring each validation item once.

    Members share the validation pairs, so the items are scored as one (N, D) batch that
    all members read, instead of gathering a copy of every pair for every member.
    """

    def __init__(self, x: torch.Tensor, pairs: Pairs, members: int, chunk: int = 8192):
        items, inverse = np.unique(np.concatenate([pairs.a, pairs.b]), return_inverse=True)
        dev = x.device
        self.x, self.items, self.chunk = x, torch.from_numpy(items).to(dev), chunk
        self.a = torch.from_numpy(inverse[: len(pairs)]).long().to(dev)
        self.b = torch.from_numpy(inverse[len(pairs):]).long().to(dev)
        self.y = torch.from_numpy(pairs.y.astype(np.float32)).to(dev).expand(members, len(pairs))

    def __call__(self, net: EnsembleMLP, clf: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
        """Each member's loss (its own: early stopping) and Bradley-Terry log-loss (comparable
        across losses and model families: :mod:`embrm.rm.tune` chooses by it)."""
        with torch.inference_mode():
            r = torch.cat([net(self.x.index_select(0, self.items[s:s + self.chunk])).float()
                           for s in range(0, len(self.items), self.chunk)], 1)
            ra, rb = r[:, self.a], r[:, self.b]
            return _pair_loss(ra, rb, self.y, clf).cpu().numpy(), _bt_loss(ra, rb, self.y).cpu().numpy()


@dataclass
class MemberSettings:
    """Each member's own learning rate, weight decay and loss: a hyperparameter grid
    trained as one batched ensemble (see :mod:`embrm.rm.tune`)."""

    lr: np.ndarray
    weight_decay: np.ndarray
    clf: np.ndarray | None = None  # bool: True trains the member on CLF's loss, else Bradley-Terry's


def train(x: np.ndarray, train_pairs: Pairs, val_pairs: Pairs, cfg: TrainConfig,
          members: MemberSettings | None = None, init: RewardModel | None = None) -> RewardModel:
    """Train an ensemble on item embeddings ``x`` (N, D) and index pairs into it.

    ``members`` gives each member its own learning rate, weight decay and loss (a
    hyperparameter grid as one batched ensemble, see :mod:`embrm.rm.tune`); by default
    every member uses ``cfg.lr``, ``cfg.weight_decay`` and ``cfg.method``'s loss.
    ``init`` starts an MLP or linear ensemble from a trained model's weights instead of a
    fresh initialisation (warm starts of active learning), on that model's features: its
    standardisation statistics, if it has them, not new ones from ``train_pairs``.
    """
    cfg.validate()
    x = check_embeddings(x, "embeddings")
    if len(train_pairs) == 0 or len(val_pairs) == 0:
        raise EmbrmError("training and validation both need at least one pair")
    for p in (train_pairs, val_pairs):
        if max(p.a.max(), p.b.max()) >= len(x):
            raise EmbrmError("pairs refer to items beyond the embeddings array")
    method = registry.get(cfg.method)
    if init is not None and init.net is not None and method.warm_start:
        std = init.standardizer  # a warm start continues on the features its weights were trained on
    else:
        std = Standardizer.fit(x, train_pairs) if cfg.standardizes else None
    cfg = replace(cfg, standardize=std is not None)  # the run records what was done, not "default"
    return method.train(x, train_pairs, val_pairs, cfg, std, members, init)


def train_net(x: np.ndarray | torch.Tensor, train_pairs: Pairs, val_pairs: Pairs, cfg: TrainConfig,
              std: Standardizer | None, shape: tuple[tuple[int, ...], bool], clf_loss: bool,
              members: MemberSettings | None = None, init: RewardModel | None = None) -> RewardModel:
    """The AdamW loop of an :class:`EnsembleMLP` of ``shape`` (hidden sizes, bias), on the
    BT loss or (``clf_loss``) CLF's, or per member as ``members`` says."""
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    hidden, bias = shape
    net = EnsembleMLP(cfg.ensemble, x.shape[1], hidden, seed=cfg.seed, bias=bias).to(device)
    if init is not None and init.net is not None:
        net.load_state(init.net.state())
    params = [p for p in net.parameters() if p.requires_grad]
    clf = torch.full((cfg.ensemble,), True, device=device) if clf_loss else None
    if members is None:
        # fused: one kernel per parameter tensor instead of a dozen elementwise passes,
        # about 5x faster a step on CPU, and the same update
        opt: Any = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    else:
        lr, wd = torch.as_tensor(members.lr), torch.as_tensor(members.weight_decay)
        if len(lr) != cfg.ensemble or len(wd) != cfg.ensemble or (members.clf is not None
                                                                   and len(members.clf) != cfg.ensemble):
            raise EmbrmError(f"per-member settings need one value per member ({cfg.ensemble})")
        opt = MemberAdamW(params, lr.to(device), wd.to(device))
        if members.clf is not None:
            clf = torch.as_tensor(np.asarray(members.clf, bool)).to(device)
    if isinstance(x, torch.Tensor):
        xt = x.to(device=device, dtype=torch.float32)
    else:
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    if std is not None:
        xt = std.apply(xt)  # a standardised copy: the caller's array stays as it was
    if _use_bf16(cfg.bf16, device):
        xt = xt.to(torch.bfloat16)  # once: every step then gathers half the bytes and casts nothing
    ta, tb = torch.from_numpy(train_pairs.a).to(device), torch.from_numpy(train_pairs.b).to(device)
    ty = torch.from_numpy(train_pairs.y.astype(np.float32)).to(device)
    group = cfg.member_group or None  # None: the net sizes its member groups to the cache
    validation = _Validation(xt, val_pairs, cfg.ensemble)
    m, n = cfg.ensemble, len(train_pairs)
    batch = batch_for(n, cfg)
    steps_per_epoch = -(-n // batch)
    min_epochs = -(-MIN_STEPS // steps_per_epoch)
    gens = [np.random.default_rng([cfg.seed, i]) for i in range(m)]
    best = net.state()
    best_loss = np.full(m, np.inf)
    best_pair_loss = np.full(m, np.inf)
    best_epoch = [0] * m
    stale = np.zeros(m, int)
    log = TrainLog(batch_size=batch)
    t0 = time.perf_counter()
    for epoch in range(1, cfg.max_epochs + 1):
        net.train()
        if cfg.bootstrap:
            order = torch.from_numpy(np.stack([g.integers(0, n, n) for g in gens])).to(device)
        else:
            order = torch.from_numpy(np.stack([g.permutation(n) for g in gens])).to(device)
        for s in range(0, n, batch):
            idx = order[:, s:s + batch]
            loss = _step_loss(net, xt, ta[idx], tb[idx], ty[idx], clf, group)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # members are independent: the sum's gradient is each one's
            opt.step()
            log.steps += 1
        net.eval()
        vl, vpl = validation(net, clf)
        state = net.state()
        for i in range(m):
            if vl[i] < best_loss[i] - 1e-5:
                best_loss[i], best_epoch[i], stale[i], best_pair_loss[i] = vl[i], epoch, 0, vpl[i]
                net.member_state(state, i, best)
            else:
                stale[i] += 1
        log.epochs = epoch
        if epoch >= min_epochs and (stale >= cfg.patience).all():
            break
    net.load_state(best)
    net.eval()
    log.best_epoch, log.val_loss, log.seconds = best_epoch, [float(v) for v in best_loss], time.perf_counter() - t0
    log.val_pair_loss = [float(v) for v in best_pair_loss]
    return RewardModel(cfg, x.shape[1], net=net, log=log, standardizer=std)


def train_logreg(x: np.ndarray | torch.Tensor, tp: Pairs, vp: Pairs, cfg: TrainConfig,
                 std: Standardizer | None, pointwise: bool) -> RewardModel:
    """The exact logistic regression of :mod:`embrm.rm.logreg` as a model: the refit on
    training + validation pairs, whose ``validation_model`` is the fit on training pairs
    alone."""
    from embrm.rm.logreg import fit_logreg

    fit = fit_logreg(x, tp, vp, cfg, std, pointwise)
    out_cfg = replace(cfg, l2=fit.l2, bootstrap=cfg.ensemble > 1, hidden=())
    log = TrainLog(epochs=1, best_epoch=[1] * cfg.ensemble, val_loss=[fit.val_loss] * cfg.ensemble,
                   seconds=fit.seconds, steps=fit.steps, l2_path=fit.path)
    held = RewardModel(out_cfg, fit.net.dim, net=fit.held_net, log=log, standardizer=std)
    return RewardModel(out_cfg, fit.net.dim, net=fit.net, log=log, standardizer=std, validation_model=held)


def train_lgbm(x: np.ndarray, tp: Pairs, vp: Pairs, cfg: TrainConfig) -> RewardModel:
    """LightGBM classifier on single responses (winner 1, loser 0), as the seed paper's."""
    try:
        import lightgbm as lgb
    except ImportError:
        raise EmbrmError("method lgbm needs LightGBM: `pip install 'embrm[lgbm]'` "
                         "(or `pip install lightgbm`)") from None

    def items(p: Pairs) -> tuple[np.ndarray, np.ndarray]:
        idx = np.concatenate([p.a, p.b])
        return x[idx], np.concatenate([p.y, 1 - p.y])

    t0 = time.perf_counter()
    xtr, ytr = items(tp)
    xva, yva = items(vp)
    boosters = []
    for i in range(cfg.ensemble):
        params = {"objective": "binary", "learning_rate": 0.05, "num_leaves": 31, "verbose": -1,
                  "seed": cfg.seed + i, "bagging_fraction": 0.8, "bagging_freq": 1, "feature_fraction": 0.8,
                  "num_threads": 0}
        dtr = lgb.Dataset(xtr, ytr)
        dva = lgb.Dataset(xva, yva, reference=dtr)
        boosters.append(lgb.train(params, dtr, num_boost_round=cfg.lgbm_rounds, valid_sets=[dva],
                                  callbacks=[lgb.early_stopping(20, verbose=False)]))
    log = TrainLog(epochs=max(b.best_iteration for b in boosters), best_epoch=[b.best_iteration for b in boosters],
                   seconds=time.perf_counter() - t0)
    return RewardModel(cfg, x.shape[1], boosters=boosters, log=log)


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["hidden"] = list(cfg.hidden)
    return d
