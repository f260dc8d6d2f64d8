"""Where PIR learns the backbone's errors: out-of-sample forecasts, never the backbone's own training fit.

A backbone's forecasts of its own training windows are in-sample: their
errors do not look like the errors it makes on new data (on one ETT-format
file its train MSE was 0.40 and its test MSE 0.30), and a PIR fitted on them
learns the wrong error profile (there: +8.9 % test MSE in sample, -3.1 %
fitted on held-out validation windows). Every
scheme below hands PIR backbone forecasts of windows whose targets the
backbone never fitted, plus a **check** segment PIR never trains on, used
for early stopping, the choice of K and the guard (training/forecasting/guard.py).

* ``holdout`` (default): the validation split (the backbone only used it to
  pick its epoch) is cut by time into a *fit* part (first ``fit_fraction``
  of its windows) and a *check* part; windows of the check part start at
  least H steps after the last fit window, so no check target was a fit
  target (the gap shrinks when the split is too short to afford it, e.g.
  H=720 on ETTh1, and the amount is reported). Default because it costs no
  extra backbone and the errors PIR learns come from the very backbone
  that is served.
* ``crossfit``: rolling-origin cross-fitting over the training period:
  ``folds`` extra backbones, the j-th trained on the rows before origin
  ``b_j`` (same settings), forecast the windows whose targets start in
  ``[b_j, b_{j+1})``; PIR fits on those out-of-fold forecasts plus the
  holdout fit part (more data, but errors of slightly different backbones,
  and ``folds`` extra trainings); check as in ``holdout``.
* ``insample``: the paper's official code: PIR fits on the training windows
  with the served backbone's in-sample forecasts; check as in ``holdout``
  (so the guard still protects the result).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from training.forecasting.data import Prepared, WindowSet

CALIBRATIONS = ("holdout", "crossfit", "insample")


@dataclass
class Calibration:
    scheme: str
    fit: WindowSet
    fit_base: np.ndarray
    check: WindowSet
    check_base: np.ndarray
    detail: dict = field(default_factory=dict)


def split_validation(val: WindowSet, fit_fraction: float = 0.6,
                     min_check_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray, int]:
    """Indices of the fit and check windows of the validation split, and the gap (steps) between them."""
    n = len(val)
    cut = max(1, int(n * fit_fraction))
    min_check = max(2, int(n * min_check_fraction))
    gap = int(max(0, min(val.pred_len, n - cut - min_check)))
    fit = np.arange(cut)
    check = np.arange(cut + gap, n)
    if len(check) < 2:
        raise ValueError(f"validation split too short for a check segment ({n} windows)")
    return fit, check, gap


def _concat(a: WindowSet, b: WindowSet) -> WindowSet:
    return WindowSet(np.concatenate([a.x, b.x]), np.concatenate([a.y, b.y]), np.concatenate([a.marks, b.marks]),
                     np.concatenate([a.start, b.start]), a.seq_len, a.pred_len)


def crossfit_forecasts(prep: Prepared, backbone: str, fit_cfg, folds: int, hparams: dict | None,
                       log: Callable[[str], None] | None = None) -> tuple[WindowSet, np.ndarray, list[int]]:
    """Out-of-fold backbone forecasts of the training period's later windows (rolling origin)."""
    from training.forecasting.train import build_backbone, predict, seed_everything, train_backbone_on

    train, val = prep.windows("train"), prep.windows("val")
    _, end = prep.borders["train"]
    L = prep.seq_len
    origins = [int(end * f) for f in np.linspace(0.5, 1.0, folds + 1)]
    sets, bases = [], []
    for j in range(folds):
        b0, b1 = origins[j], origins[j + 1]
        fit_keep = train.target_end < b0
        pred_keep = (train.start + L >= b0) & (train.start + L < b1)
        if fit_keep.sum() < 2 or not pred_keep.any():
            continue
        seed_everything(fit_cfg.seed + j + 1)
        model = build_backbone(backbone, prep, **(hparams or {}))
        train_backbone_on(model, train.subset(fit_keep), val, fit_cfg,
                          log=(lambda m, j=j: log(f"fold {j + 1}/{folds} {m}")) if log else None)
        part = train.subset(pred_keep)
        sets.append(part)
        bases.append(predict(model, part))
    if not sets:
        raise ValueError("training period too short for rolling-origin cross-fitting")
    out = sets[0]
    for s in sets[1:]:
        out = _concat(out, s)
    return out, np.concatenate(bases), origins


def calibrate(prep: Prepared, model, scheme: str, backbone: str | None = None, fit_cfg=None, folds: int = 3,
              hparams: dict | None = None, fit_fraction: float = 0.6,
              log: Callable[[str], None] | None = None) -> Calibration:
    """The fit and check windows (with the served backbone's or out-of-fold forecasts) of ``scheme``."""
    from training.forecasting.train import predict

    if scheme not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {scheme!r}")
    val = prep.windows("val")
    fit_idx, check_idx, gap = split_validation(val, fit_fraction)
    val_base = predict(model, val)
    check, check_base = val.subset(check_idx), val_base[check_idx]
    detail = {"check_windows": len(check_idx), "gap_steps": gap, "gap_full": gap >= prep.pred_len}
    if scheme == "holdout":
        fit, fit_base = val.subset(fit_idx), val_base[fit_idx]
    elif scheme == "insample":
        fit = prep.windows("train")
        fit_base = predict(model, fit)
    else:
        oof, oof_base, origins = crossfit_forecasts(prep, backbone, copy.deepcopy(fit_cfg), folds, hparams, log)
        fit = _concat(oof, val.subset(fit_idx))
        fit_base = np.concatenate([oof_base, val_base[fit_idx]])
        detail["origins"] = origins
    detail["fit_windows"] = len(fit)
    return Calibration(scheme, fit, fit_base, check, check_base, detail)
