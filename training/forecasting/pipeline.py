"""Backbone -> frozen -> PIR fitted out of sample -> K chosen -> guarded -> evaluated on test.

1. the backbone is trained on the train split (early stopping on validation)
   and frozen;
2. the retrieval store holds every training pair; every query (fit, check,
   test) only retrieves pairs matured by its own origin, as online;
3. the calibration scheme (training/forecasting/calibration.py) gives PIR
   out-of-sample backbone forecasts to fit on and a *check* segment it never
   trains on;
4. one PIR per K in ``top_ks`` (the paper's grid is {10, 20, 50}) and per
   choice of revisions in ``parts`` (``full``: local + global as in the
   paper; ``global_only``, ``local_only``), early stopping on the check
   segment; the candidate with the lowest check MSE wins;
5. the guard (training/forecasting/guard.py) compares revised vs base on the
   check segment per channel and horizon block and zeroes α, β where the
   revision did not win; the decisions live in PIR's ``keep`` buffer, hence
   in the checkpoint, the ONNX graph and ``forecast.json``;
6. test: base, guarded PIR and unguarded PIR (MSE/MAE), R² of δ.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from forecasting.store import RetrievalStore
from training.forecasting.calibration import Calibration, calibrate
from training.forecasting.data import Prepared
from training.forecasting.guard import GuardDecision, decide
from training.forecasting.pir import PIR, PIRConfig
from training.forecasting.train import (FitConfig, FitResult, PIRArrays, build_backbone, default_fit,
                                        default_pir_fit, metrics, pir_arrays, pir_predict, predict, seed_everything,
                                        train_backbone, train_pir, training_store)


@dataclass
class GuardConfig:
    blocks: int = 4
    """Horizon blocks per channel (equal slices of H)."""
    batches: int = 10
    """Batch means of the paired test over the check windows."""
    t_min: float = 1.0
    """Keep a cell when its batch-means t statistic is <= -t_min (0: whenever it helped on average)."""
    enabled: bool = True


def error_r2(delta: np.ndarray, base: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """How well δ [N, C] predicts the realised per-channel MSE: R² (1 - SSres/SStot) and squared Pearson r."""
    realised = ((base - y) ** 2).mean(axis=1).ravel()
    est = delta.ravel()
    ss_res = float(np.sum((realised - est) ** 2))
    ss_tot = float(np.sum((realised - realised.mean()) ** 2))
    r = float(np.corrcoef(est, realised)[0, 1]) if est.std() > 0 else 0.0
    return {"r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0, "corr2": r * r}


def apply_guard(pir: PIR, check: PIRArrays, cfg: GuardConfig) -> GuardDecision:
    """Decide on the check windows with the guard off, then write the decisions into ``pir.keep``."""
    with torch.no_grad():
        pir.keep.fill_(1.0)
    revised, _ = pir_predict(pir, check)
    decision = decide(check.base, revised, check.y, cfg.blocks, cfg.batches, cfg.t_min)
    if not cfg.enabled:
        decision.keep[:] = True
    with torch.no_grad():
        pir.keep.copy_(torch.from_numpy(decision.step_mask(pir.config.pred_len)))
    return decision


@dataclass
class PIRRun:
    backbone: nn.Module
    pir: PIR
    store: RetrievalStore
    backbone_fit: FitResult
    pir_fit: FitResult
    calibration: Calibration
    guard: GuardDecision
    k_scores: dict[str, float]
    test: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {"backbone_fit": asdict(self.backbone_fit), "pir_fit": asdict(self.pir_fit),
                "calibration": {"scheme": self.calibration.scheme, **self.calibration.detail},
                "guard": self.guard.to_json(), "k_scores": self.k_scores, "top_k": self.pir.config.top_k,
                "use_local": self.pir.config.use_local, "use_global": self.pir.config.use_global,
                "test": self.test}


PART_CHOICES = {"full": {}, "global_only": {"use_local": False}, "local_only": {"use_global": False}}
"""Which of PIR's revisions to use: candidates compared on the check windows like K (the paper uses both)."""


def fit_pir(calib: Calibration, store: RetrievalStore, pcfg: PIRConfig, top_ks: tuple[int, ...],
            fit: FitConfig, parts: tuple[str, ...] = ("full",),
            log: Callable[[str], None] | None = None) -> tuple[PIR, FitResult, dict[str, float]]:
    """One PIR per (parts, K), early-stopped on the check windows; the lowest check MSE wins."""
    kmax = max(top_ks)
    fit_arr = pir_arrays(calib.fit, calib.fit_base, store, kmax)
    check_arr = pir_arrays(calib.check, calib.check_base, store, kmax)
    best: tuple[float, PIR, FitResult] | None = None
    scores = {}
    for part in parts:
        for k in top_ks:
            seed_everything(fit.seed)
            pir = PIR(dataclasses.replace(pcfg, top_k=k, **PART_CHOICES[part]))
            tag = f"{part} K={k}"
            res = train_pir(pir, fit_arr.with_k(k), check_arr.with_k(k), fit,
                            log=(lambda m, tag=tag: log(f"{tag} {m}")) if log else None)
            scores[tag] = res.best_val
            if best is None or res.best_val < best[0]:
                best = (res.best_val, pir, res)
    return best[1], best[2], scores


def fit_pipeline(prep: Prepared, backbone: str, backbone_fit: FitConfig | None = None,
                 pir_config: dict[str, Any] | None = None, pir_fit: FitConfig | None = None,
                 backbone_hparams: dict[str, Any] | None = None, store_capacity: int | None = None,
                 calibration: str = "holdout", top_ks: tuple[int, ...] | None = None,
                 guard: GuardConfig | None = None, parts: tuple[str, ...] = ("full",),
                 model: nn.Module | None = None,
                 log: Callable[[str], None] | None = None) -> PIRRun:
    """The whole fit (see the module docstring); ``model``: an already trained backbone to reuse."""
    bfit = backbone_fit or default_fit(backbone)
    if model is None:
        seed_everything(bfit.seed)
        model = build_backbone(backbone, prep, **(backbone_hparams or {}))
        bres = train_backbone(model, prep, bfit, log=log)
    else:
        bres = FitResult(float("nan"), 0, 0, 0.0)
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()

    pcfg = PIRConfig(seq_len=prep.seq_len, pred_len=prep.pred_len, n_channels=prep.n_channels, **(pir_config or {}))
    store = training_store(prep, store_capacity)
    calib = calibrate(prep, model, calibration, backbone, bfit, hparams=backbone_hparams, log=log)
    pir, pres, scores = fit_pir(calib, store, pcfg, tuple(top_ks or (pcfg.top_k,)), pir_fit or default_pir_fit(),
                                parts, log)
    k = pir.config.top_k
    decision = apply_guard(pir, pir_arrays(calib.check, calib.check_base, store, k), guard or GuardConfig())

    test_ws = prep.windows("test")
    test = pir_arrays(test_ws, predict(model, test_ws), store, k)
    revised, delta = pir_predict(pir, test)
    keep = pir.keep.clone()
    with torch.no_grad():
        pir.keep.fill_(1.0)
        unguarded, _ = pir_predict(pir, test)
        pir.keep.copy_(keep)
    result = {"base": metrics(test.base, test.y), "pir": metrics(revised, test.y),
              "pir_unguarded": metrics(unguarded, test.y), "delta": error_r2(delta, test.base, test.y),
              "n_windows": len(test), "top_k": k, "guard_kept": decision.kept_fraction,
              "parts": [n for n, on in (("local", pir.config.use_local), ("global", pir.config.use_global)) if on]}
    return PIRRun(model, pir, store, bres, pres, calib, decision, scores, result)
