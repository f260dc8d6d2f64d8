"""Seeded training loops: backbones (MSE, Adam, early stopping on validation MSE) and PIR on a frozen backbone.

Backbone: Adam, MSE on the scaled values, learning rate halved every epoch
after the first (Time-Series-Library's ``type1``), early stopping on the
validation MSE with ``patience``, the best epoch's weights restored.

PIR: the backbone is run once (eval mode, no gradients) over every window of
every split; the retrieval of every window is computed once from the store of
training pairs (a training query never retrieves a pair overlapping its own
span); then only PIR's parameters are trained on the training windows with
``MSE(ŷ, y) + λ·L1(δ, realised)``, early stopping on the validation MSE of ŷ.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from forecasting.store import RetrievalStore
from training.forecasting.data import Prepared, WindowSet
from training.forecasting.dlinear import DLinear, DLinearConfig
from training.forecasting.patchtst import PatchTST, PatchTSTConfig
from training.forecasting.pir import PIR, PIRConfig

BACKBONES = ("dlinear", "patchtst")


@dataclass
class FitConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    lr_halving: bool = True
    """Halve the learning rate after every epoch (TSLib ``lradj=type1``)."""
    patience: int = 3
    seed: int = 2021
    weight_decay: float = 0.0
    max_seconds: float | None = None
    """Stop after the epoch that crosses this budget (benchmarks on shared machines)."""


@dataclass
class FitResult:
    best_val: float
    epochs_run: int
    best_epoch: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_backbone(name: str, prep: Prepared, **hparams: Any) -> nn.Module:
    common = {"seq_len": prep.seq_len, "pred_len": prep.pred_len, "n_channels": prep.n_channels}
    if name == "dlinear":
        return DLinear(DLinearConfig(**common, **hparams))
    if name == "patchtst":
        return PatchTST(PatchTSTConfig(**common, **hparams))
    raise ValueError(f"unknown backbone {name!r} (known: {', '.join(BACKBONES)})")


def default_fit(name: str) -> FitConfig:
    """The authors' optimiser settings for ETTh1 (epochs are capped by the caller's budget)."""
    if name == "dlinear":
        return FitConfig(epochs=10, batch_size=32, lr=5e-3, patience=3)
    return FitConfig(epochs=10, batch_size=128, lr=1e-3, patience=3)


def _batches(n: int, batch_size: int, shuffle: bool, rng: np.random.Generator | None = None):
    order = rng.permutation(n) if shuffle else np.arange(n)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


def _fit(model: nn.Module, step: Callable[[np.ndarray], torch.Tensor], n_train: int,
         validate: Callable[[], float], cfg: FitConfig, params=None, log: Callable[[str], None] | None = None) -> FitResult:
    seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    params = list(params if params is not None else model.parameters())
    opt = torch.optim.Adam([p for p in params if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, best_state, best_epoch, bad = math.inf, None, 0, 0
    history = []
    started = time.perf_counter()
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0, total, count = time.perf_counter(), 0.0, 0
        for idx in _batches(n_train, cfg.batch_size, True, rng):
            opt.zero_grad(set_to_none=True)
            loss = step(idx)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        model.eval()
        val = validate()
        history.append({"epoch": epoch, "train_loss": total / max(count, 1), "val_mse": val,
                        "seconds": time.perf_counter() - t0, "lr": opt.param_groups[0]["lr"]})
        if log:
            log(f"epoch {epoch}: train {total / max(count, 1):.4f} val {val:.4f} ({time.perf_counter() - t0:.1f}s)")
        if val < best:
            best, best_epoch, bad = val, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= cfg.patience:
                break
        if cfg.lr_halving:
            for g in opt.param_groups:
                g["lr"] *= 0.5
        if cfg.max_seconds is not None and time.perf_counter() - started > cfg.max_seconds:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FitResult(best, epoch, best_epoch, time.perf_counter() - started, history)


def default_pir_fit() -> FitConfig:
    """PIR overfits the training residuals of its backbone within a few epochs: short, early-stopped runs."""
    return FitConfig(epochs=6, batch_size=64, lr=1e-3, lr_halving=False, patience=2)


# ---------------------------------------------------------------------------- backbones
@torch.no_grad()
def predict(model: nn.Module, ws: WindowSet, batch_size: int = 512) -> np.ndarray:
    model.eval()
    out = [model(torch.from_numpy(ws.x[i:i + batch_size])).numpy() for i in range(0, len(ws), batch_size)]
    return np.concatenate(out).astype(np.float32)


def metrics(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {"mse": float(np.mean((pred - y) ** 2)), "mae": float(np.mean(np.abs(pred - y)))}


def train_backbone(model: nn.Module, prep: Prepared, cfg: FitConfig,
                   log: Callable[[str], None] | None = None) -> FitResult:
    train, val = prep.windows("train"), prep.windows("val")
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    loss_fn = nn.MSELoss()

    def step(idx: np.ndarray) -> torch.Tensor:
        return loss_fn(model(x[idx]), y[idx])

    def validate() -> float:
        return metrics(predict(model, val), val.y)["mse"]

    seed_everything(cfg.seed)
    return _fit(model, step, len(train), validate, cfg, log=log)


# ---------------------------------------------------------------------------- PIR
@dataclass
class PIRArrays:
    """Everything PIR sees for one split (backbone outputs and retrieval precomputed)."""

    x: np.ndarray
    y: np.ndarray
    marks: np.ndarray
    base: np.ndarray
    sims: np.ndarray
    targets: np.ndarray
    mask: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def tensors(self, idx: np.ndarray | slice) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(np.ascontiguousarray(a[idx]))
                     for a in (self.x, self.base, self.marks, self.sims, self.targets, self.mask, self.y))


def training_store(prep: Prepared, capacity: int | None = None) -> RetrievalStore:
    """The store of every training (input, target) pair; ``matured_at`` is the target's last row."""
    train = prep.windows("train")
    store = RetrievalStore(prep.n_channels, prep.seq_len, prep.pred_len, capacity or len(train))
    store.add(train.x, train.y, train.target_end)
    return store


def pir_arrays(ws: WindowSet, base: np.ndarray, store: RetrievalStore, k: int, exclude_overlap: bool,
               chunk: int = 512) -> PIRArrays:
    sims, targets, mask = [], [], []
    for i in range(0, len(ws), chunk):
        sl = slice(i, i + chunk)
        if exclude_overlap:
            r = store.query(ws.x[sl], k, exclude_near=ws.target_end[sl], exclude_radius=ws.seq_len + ws.pred_len)
        else:
            r = store.query(ws.x[sl], k, not_after=ws.input_end[sl])
        sims.append(r.sims)
        targets.append(r.targets)
        mask.append(r.mask)
    return PIRArrays(ws.x, ws.y, ws.marks, base, np.concatenate(sims), np.concatenate(targets), np.concatenate(mask))


@torch.no_grad()
def pir_predict(pir: PIR, arr: PIRArrays, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    pir.eval()
    revised, delta = [], []
    for i in range(0, len(arr), batch_size):
        t = arr.tensors(slice(i, i + batch_size))
        r, d = pir(*t[:6])
        revised.append(r.numpy())
        delta.append(d.numpy())
    return np.concatenate(revised), np.concatenate(delta)


def warmup_identification(pir: PIR, train: PIRArrays, epochs: int, cfg: FitConfig) -> None:
    """Fit the identification network alone (L1 to the realised per-channel MSE) before the joint phase.

    δ enters α and β detached, so this changes nothing in the objective; it only
    gives the gates a calibrated δ from the first joint step (the joint phase is
    early-stopped after a few epochs, too few for the estimator alone).
    """
    if epochs <= 0:
        return
    params = list(pir.identification.parameters()) + [pir.channel_embedding]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed + 1)
    xs, bs = torch.from_numpy(train.x), torch.from_numpy(train.base)
    realised = torch.from_numpy(((train.base - train.y) ** 2).mean(axis=1))
    pir.train()
    for _ in range(epochs):
        for idx in _batches(len(train), cfg.batch_size, True, rng):
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.l1_loss(pir.estimate(xs[idx], bs[idx]), realised[idx])
            loss.backward()
            opt.step()
    pir.eval()


def train_pir(pir: PIR, train: PIRArrays, val: PIRArrays, cfg: FitConfig,
              log: Callable[[str], None] | None = None, ue_warmup_epochs: int = 3) -> FitResult:
    def step(idx: np.ndarray) -> torch.Tensor:
        x, base, marks, sims, tg, mask, y = train.tensors(np.sort(idx))
        revised, delta = pir(x, base, marks, sims, tg, mask)
        return pir.loss(revised, delta, base, y)[0]

    def validate() -> float:
        return metrics(pir_predict(pir, val)[0], val.y)["mse"]

    seed_everything(cfg.seed)
    warmup_identification(pir, train, ue_warmup_epochs, cfg)
    return _fit(pir, step, len(train), validate, cfg, log=log)


def error_r2(delta: np.ndarray, base: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """How well δ [N, C] predicts the realised per-channel MSE: R² (1 - SSres/SStot) and squared Pearson r."""
    realised = ((base - y) ** 2).mean(axis=1).ravel()
    est = delta.ravel()
    ss_res = float(np.sum((realised - est) ** 2))
    ss_tot = float(np.sum((realised - realised.mean()) ** 2))
    r = float(np.corrcoef(est, realised)[0, 1]) if est.std() > 0 else 0.0
    return {"r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0, "corr2": r * r}


@dataclass
class PIRRun:
    backbone: nn.Module
    pir: PIR
    store: RetrievalStore
    backbone_fit: FitResult
    pir_fit: FitResult
    test: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {"backbone_fit": asdict(self.backbone_fit), "pir_fit": asdict(self.pir_fit), "test": self.test}


def fit_pipeline(prep: Prepared, backbone: str, backbone_fit: FitConfig | None = None,
                 pir_config: dict[str, Any] | None = None, pir_fit: FitConfig | None = None,
                 backbone_hparams: dict[str, Any] | None = None, store_capacity: int | None = None,
                 log: Callable[[str], None] | None = None) -> PIRRun:
    """Backbone -> frozen -> PIR, evaluated on the test split (MSE/MAE with and without PIR, R² of δ)."""
    bfit = backbone_fit or default_fit(backbone)
    seed_everything(bfit.seed)
    model = build_backbone(backbone, prep, **(backbone_hparams or {}))
    bres = train_backbone(model, prep, bfit, log=log)
    for p in model.parameters():
        p.requires_grad_(False)

    pcfg = PIRConfig(seq_len=prep.seq_len, pred_len=prep.pred_len, n_channels=prep.n_channels, **(pir_config or {}))
    store = training_store(prep, store_capacity)
    splits = {}
    for name in ("train", "val", "test"):
        ws = prep.windows(name)
        splits[name] = pir_arrays(ws, predict(model, ws), store, pcfg.top_k, exclude_overlap=(name == "train"))
    seed_everything((pir_fit or FitConfig()).seed)
    pir = PIR(pcfg)
    pres = train_pir(pir, splits["train"], splits["val"], pir_fit or default_pir_fit(), log=log)
    test = splits["test"]
    revised, delta = pir_predict(pir, test)
    result = {"base": metrics(test.base, test.y), "pir": metrics(revised, test.y),
              "delta": error_r2(delta, test.base, test.y), "n_windows": len(test)}
    return PIRRun(model, pir, store, bres, pres, result)
