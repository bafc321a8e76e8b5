"""Reward-model methods as objects: the built-in ones, and the base classes of plug-ins.

A method says everything embrm needs to know about it in one place (the registry,
:mod:`embrm.methods`, finds it by name): its net shape, whether it standardises
features by default, its part of ``--tune``'s grid, how it trains, scores, saves and
loads, and which files (and tensor shapes) a run of it holds. Nothing else in embrm
branches on a method's name.

Plug-ins subclass :class:`Method` (anything), :class:`NetMethod` (an MLP or linear
ensemble saved as ``weights.safetensors``) or, simplest, :class:`LinearFit`: a linear
Bradley-Terry model whose weights ``fit`` computes; embrm does the rest. Module-level
imports here are numpy only, so the registry can hand out these objects (and the
run-format check can ask them what a run holds) without importing torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embrm import runshapes
from embrm.errors import EmbrmError

if TYPE_CHECKING:
    from embrm.rm.pairs import Pairs
    from embrm.rm.standardize import Standardizer
    from embrm.rm.trainer import MemberSettings, RewardModel, TrainConfig, TrainLog

WEIGHTS = "weights.safetensors"  # runformat.WEIGHTS (not imported: runformat imports the registry)


class Method:
    """The interface. ``tune_kind``: ``None`` (not in ``--tune``), ``"adam"`` (members of a
    batched ensemble per width in ``tune_widths``), ``"lambda"`` (a logistic-regression
    path) or ``"fit"`` (one fit, judged by validation log-loss, like every setting)."""

    name: str = ""
    standardize: bool = False  # the default of --standardize/--no-standardize
    refits: bool = False  # the saved model has also trained on the validation pairs
    warm_start: bool = False  # train(init=...) continues from a model's weights
    tune_kind: str | None = "fit"
    tune_widths: tuple[tuple[int, ...], ...] = ()

    def net_shape(self, cfg: TrainConfig) -> tuple[tuple[int, ...], bool]:
        """Hidden sizes and whether layers have biases (for net-based methods)."""
        return (), False

    def train(self, x: Any, tp: Pairs, vp: Pairs, cfg: TrainConfig, std: Standardizer | None,
              members: MemberSettings | None = None, init: RewardModel | None = None) -> RewardModel:
        raise NotImplementedError

    def score(self, model: RewardModel, x: np.ndarray) -> np.ndarray:
        """``(members, items)`` rewards of rows ``x`` (already standardised where the run is)."""
        raise NotImplementedError

    def save(self, model: RewardModel, out: Path) -> None:
        raise NotImplementedError

    def load(self, files: dict[str, Any], tc: TrainConfig, dim: int, log: TrainLog, std: Standardizer | None,
             where: str) -> RewardModel:
        """The model from a run's files (``{name: bytes}``, every one already checked
        against :meth:`files` by :func:`embrm.runformat.check_files`)."""
        raise NotImplementedError

    def files(self, train: dict[str, Any], dim: int) -> dict[str, dict[str, tuple[int, ...]] | None]:
        """The weight files a run of this method holds, and nothing else: name -> the exact
        shape of every tensor in it (``weights.safetensors``, float32), or None (a
        LightGBM text file, ``lgbm_<i>.txt``)."""
        raise NotImplementedError


class NetMethod(Method):
    """An :class:`~embrm.rm.models.EnsembleMLP` trained by AdamW (BT or CLF loss), saved
    as ``weights.safetensors``."""

    warm_start = True
    tune_kind = "adam"

    def __init__(self, name: str = "", hidden: bool = True, clf_loss: bool = False,
                 tune_widths: tuple[tuple[int, ...], ...] = ()):
        self.name = name or self.name
        self.hidden, self.clf_loss = hidden, clf_loss
        self.tune_widths = tune_widths or self.tune_widths

    def net_shape(self, cfg: TrainConfig) -> tuple[tuple[int, ...], bool]:
        # a Bradley-Terry linear model has no bias: it would cancel in every difference
        return (tuple(cfg.hidden), True) if self.hidden else ((), False)

    def train(self, x: Any, tp: Pairs, vp: Pairs, cfg: TrainConfig, std: Standardizer | None,
              members: MemberSettings | None = None, init: RewardModel | None = None) -> RewardModel:
        from embrm.rm.trainer import train_net

        return train_net(x, tp, vp, cfg, std, self.net_shape(cfg), self.clf_loss, members, init)

    def score(self, model: RewardModel, x: np.ndarray) -> np.ndarray:
        import torch

        assert model.net is not None
        device = next(model.net.parameters()).device
        with torch.inference_mode():
            return model.net(torch.from_numpy(x).to(device)).float().cpu().numpy()

    def save(self, model: RewardModel, out: Path) -> None:
        from safetensors.torch import save_file

        assert model.net is not None
        save_file({k: v.contiguous().cpu() for k, v in model.net.state().items()}, str(Path(out) / WEIGHTS))

    def load(self, files: dict[str, Any], tc: TrainConfig, dim: int, log: TrainLog, std: Standardizer | None,
             where: str) -> RewardModel:
        from safetensors.torch import load

        from embrm.rm.models import EnsembleMLP
        from embrm.rm.trainer import RewardModel

        hidden, bias = self.net_shape(tc)
        net = EnsembleMLP(tc.ensemble, dim, hidden, bias=bias)
        net.load_state(load(bytes(files[WEIGHTS])))
        return RewardModel(tc, dim, net=net.eval(), log=log, standardizer=std)

    def files(self, train: dict[str, Any], dim: int) -> dict[str, dict[str, tuple[int, ...]] | None]:
        """Every layer's weight ``(M, d_in, d_out)`` and bias ``(M, 1, d_out)`` (zeros where
        the net has none: the file always holds both), :mod:`embrm.runshapes`."""
        shapes = runshapes.mlp_tensors(train, dim) if self.hidden else runshapes.linear_tensors(train, dim)
        return {WEIGHTS: shapes}


class LinearFit(NetMethod):
    """A linear Bradley-Terry model whose weights :meth:`fit` computes: the simplest plug-in.

    ``fit`` gets the training rows as a float64 array (standardised where the method
    standardises) and the pairs, and returns ``(members, dim)`` weights; the reward of a
    row is ``w . x``. Saving, loading, scoring, serving and the file check are
    :class:`NetMethod`'s (a linear net without bias).
    """

    warm_start = False
    tune_kind = "fit"

    def __init__(self) -> None:
        super().__init__(hidden=False)

    def fit(self, z: np.ndarray, train_pairs: Pairs, val_pairs: Pairs, cfg: TrainConfig) -> np.ndarray:
        raise NotImplementedError

    def train(self, x: Any, tp: Pairs, vp: Pairs, cfg: TrainConfig, std: Standardizer | None,
              members: MemberSettings | None = None, init: RewardModel | None = None) -> RewardModel:
        import time

        import torch

        from embrm.rm.logreg import pair_log_loss, prepare
        from embrm.rm.models import EnsembleMLP
        from embrm.rm.trainer import RewardModel, TrainLog

        t0 = time.perf_counter()
        z = prepare(x, std).numpy()
        w = np.asarray(self.fit(z, tp, vp, cfg), dtype=np.float64)
        if w.ndim == 1:
            w = np.tile(w, (cfg.ensemble, 1))
        if w.shape != (cfg.ensemble, z.shape[1]) or not np.isfinite(w).all():
            raise EmbrmError(f"method {self.name}: fit must return finite (members, dim) = "
                             f"({cfg.ensemble}, {z.shape[1]}) weights, got shape {w.shape}")
        net = EnsembleMLP(cfg.ensemble, z.shape[1], (), bias=False)
        with torch.no_grad():
            net.weights[0].copy_(torch.from_numpy(w).float()[:, :, None])
        s = z @ w[0]
        loss = pair_log_loss(torch.from_numpy(s[vp.a]), torch.from_numpy(s[vp.b]), torch.from_numpy(vp.y))
        log = TrainLog(epochs=1, best_epoch=[1] * cfg.ensemble, val_loss=[loss] * cfg.ensemble,
                       val_pair_loss=[loss] * cfg.ensemble, seconds=time.perf_counter() - t0)
        return RewardModel(cfg, z.shape[1], net=net.eval(), log=log, standardizer=std)


class LogregMethod(NetMethod):
    """The exact L2 logistic regression of :mod:`embrm.rm.logreg`, saved as a linear net."""

    standardize = True
    refits = True
    warm_start = False
    tune_kind = "lambda"

    def __init__(self, name: str, pointwise: bool):
        super().__init__(name, hidden=False)
        self.pointwise = pointwise

    def net_shape(self, cfg: TrainConfig) -> tuple[tuple[int, ...], bool]:
        return (), self.pointwise

    def train(self, x: Any, tp: Pairs, vp: Pairs, cfg: TrainConfig, std: Standardizer | None,
              members: MemberSettings | None = None, init: RewardModel | None = None) -> RewardModel:
        from embrm.rm.trainer import train_logreg

        return train_logreg(x, tp, vp, cfg, std, self.pointwise)


class LgbmMethod(Method):
    """LightGBM classifier on single responses, one ``lgbm_<i>.txt`` per member."""

    tune_kind = None
    untuned_because = "LightGBM has its own early stopping"

    def __init__(self, name: str):
        self.name = name

    def train(self, x: Any, tp: Pairs, vp: Pairs, cfg: TrainConfig, std: Standardizer | None,
              members: MemberSettings | None = None, init: RewardModel | None = None) -> RewardModel:
        from embrm.rm.trainer import train_lgbm

        model = train_lgbm(std.apply(x) if std is not None else x, tp, vp, cfg)
        model.standardizer = std
        return model

    def score(self, model: RewardModel, x: np.ndarray) -> np.ndarray:
        assert model.boosters is not None
        return np.stack([b.predict(x, raw_score=True) for b in model.boosters])

    def save(self, model: RewardModel, out: Path) -> None:
        assert model.boosters is not None
        for i, b in enumerate(model.boosters):
            (Path(out) / f"lgbm_{i}.txt").write_text(b.model_to_string())

    def load(self, files: dict[str, Any], tc: TrainConfig, dim: int, log: TrainLog, std: Standardizer | None,
             where: str) -> RewardModel:
        from embrm.rm.trainer import RewardModel

        try:
            import lightgbm as lgb
        except ImportError:
            raise EmbrmError("this run is a LightGBM model: `pip install lightgbm` to load it") from None
        boosters = []
        for i in range(tc.ensemble):
            try:
                boosters.append(lgb.Booster(model_str=bytes(files[f"lgbm_{i}.txt"]).decode("ascii")))
            except lgb.basic.LightGBMError as e:  # checked already; whatever LightGBM still finds is the run's fault
                raise EmbrmError(f"{where}: lgbm_{i}.txt is not a model LightGBM can read "
                                 f"({str(e).splitlines()[0][:120] if str(e) else 'LightGBMError'})") from None
        return RewardModel(tc, dim, boosters=boosters, log=log, standardizer=std)

    def files(self, train: dict[str, Any], dim: int) -> dict[str, dict[str, tuple[int, ...]] | None]:
        return {name: None for name in runshapes.lgbm_files(train, dim)}


class Tuned(Method):
    """``--tune`` as a method (so that ``reproduce compare`` can put it beside the others):
    the grid of :mod:`embrm.rm.tune` on the training and validation pairs it is given,
    then the chosen setting trained. The model it returns is the chosen method's, so a
    saved run names that method, not this one."""

    tune_kind = None
    untuned_because = "it is the tuner itself"

    def __init__(self, name: str):
        self.name = name

    def train(self, x: Any, tp: Pairs, vp: Pairs, cfg: TrainConfig, std: Standardizer | None,
              members: MemberSettings | None = None, init: RewardModel | None = None) -> RewardModel:
        from dataclasses import replace

        from embrm.rm.trainer import train
        from embrm.rm.tune import tune

        chosen, _ = tune(x, tp, vp, replace(cfg, method=Method.name or "bt", standardize=None, ensemble=1))
        return train(x, tp, vp, replace(chosen, ensemble=cfg.ensemble, seed=cfg.seed))


_MLP_WIDTHS = ((64,), (256,), (1024, 512))
BT = NetMethod("bt", tune_widths=_MLP_WIDTHS)
CLF = NetMethod("clf", clf_loss=True, tune_widths=_MLP_WIDTHS[:2])
LINEAR = NetMethod("linear", hidden=False, tune_widths=((),))
LOGREG = LogregMethod("logreg", pointwise=False)
LOGREG_CLF = LogregMethod("logreg-clf", pointwise=True)
LGBM = LgbmMethod("lgbm")
TUNE = Tuned("tune")
