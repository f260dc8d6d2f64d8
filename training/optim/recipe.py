"""The training recipe's moving parts: optimizers, initialisation, regularisation, LR decay.

Two ways to update embedding tables (``TrainConfig.embedding_update``):

* ``"fused"``: TorchRec/FBGEMM's fused kernel updates the rows a batch touches
  inside the backward pass (table-wise sharded). Adagrad or SGD on CPU; Adam
  (``EmbOptimType.ADAM``) only where FBGEMM has it, i.e. on CUDA. FBGEMM's CPU
  kernels ignore weight decay, so embedding L2 is a penalty on the embeddings
  the batch looked up, lambda/2 * mean_b sum_f ||e_bf||^2 (it reaches the rows a
  batch touches, weighted by how often), and gradient clipping can only see the
  dense part (the table gradients never materialise).
* ``"dense"``: the tables are ordinary parameters (data-parallel, replicated),
  updated by a torch optimizer: the FuxiCTR recipe of the official DLF code
  exactly -- Adam on everything, the L2 penalty lambda/2 ||W||^2 over whole
  tables, clipping of the full model's gradient norm. Right for tables that fit
  every rank's memory (all built-in datasets but full Criteo).

``build_optimizers`` is the one place that turns a config into optimizers; the dense
optimizer is any name of ``training.optim.registry`` (torch's, SAM, LightSAM).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import nn

from training.optim.registry import is_sharpness_aware, make_optimizer

TABLE_OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adagrad": torch.optim.Adagrad,
    "sgd": torch.optim.SGD,
}
"""Optimizers for the tables under ``embedding_update="dense"``."""
FUSED_EMBEDDING_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adagrad": torch.optim.Adagrad,
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,  # FBGEMM's EmbOptimType.ADAM: CUDA only
}
MIN_LR = 1e-6
"""Floor of learning-rate decay on plateau (FuxiCTR's ``lr_decay(min_lr=1e-6)``)."""


def embedding_init_fn(std: float | None) -> Callable[[torch.Tensor], Any] | None:
    """N(0, std^2) table init (FuxiCTR default std 1e-4); None keeps TorchRec's uniform init."""
    if std is None:
        return None

    def init(weight: torch.Tensor) -> Any:
        return nn.init.normal_(weight, mean=0.0, std=std)

    return init


def xavier_init(module: nn.Module) -> None:
    """FuxiCTR's ``reset_parameters``: xavier-normal weights and zero biases on every nn.Linear
    (custom parameters keep their own init)."""
    for m in module.modules():
        if type(m) is nn.Linear:
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def check_fused_optimizer(name: str, device: torch.device) -> None:
    if name not in FUSED_EMBEDDING_OPTIMIZERS:
        raise ValueError(f"embedding optimizer must be one of {sorted(FUSED_EMBEDDING_OPTIMIZERS)}, got {name!r}")
    if name == "adam" and device.type != "cuda":
        raise ValueError("fused Adam on embeddings (EmbOptimType.ADAM) needs a CUDA device; on CPU use "
                         "embedding_update=dense (Adam over whole tables, as FuxiCTR) or embedding_optimizer=adagrad")


@dataclass
class Optimizers:
    dense: torch.optim.Optimizer
    embedding: torch.optim.Optimizer | None
    """A torch optimizer over the tables (dense update only; fused tables update themselves)."""
    clipped: list[nn.Parameter]
    """Parameters whose joint gradient norm is clipped."""
    tables: list[nn.Parameter]
    """Tables the L2 penalty covers (dense update only)."""

    def zero_grad(self) -> None:
        for opt in self.all():
            opt.zero_grad()

    def step(self) -> None:
        for opt in self.all():
            opt.step()

    def all(self) -> list[torch.optim.Optimizer]:
        return [self.dense] + ([self.embedding] if self.embedding is not None else [])

    def decay_lr(self, factor: float, fused: Any = None) -> float:
        """Multiply every learning rate by ``factor`` (floor MIN_LR); returns the dense one."""
        groups = [g for opt in self.all() for g in opt.param_groups]
        if fused is not None:
            groups += list(fused.param_groups)
        for group in groups:
            group["lr"] = max(group["lr"] * factor, MIN_LR)
        if fused is not None:
            fused.step()  # FBGEMM's fused optimizers only read their learning rate in step()
        return self.dense.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        return {"dense": self.dense.state_dict(),
                "embedding": self.embedding.state_dict() if self.embedding is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dense.load_state_dict(state["dense"])
        if self.embedding is not None and state.get("embedding") is not None:
            self.embedding.load_state_dict(state["embedding"])


def build_optimizers(cfg: Any, named: Iterable[tuple[str, nn.Parameter]]) -> Optimizers:
    """Dense optimizer (and, for ``embedding_update="dense"``, the tables' optimizer) from a TrainConfig."""
    dense, tables = [], []
    for name, p in named:
        if not p.requires_grad:
            continue
        (tables if ".ebc." in f".{name}" else dense).append(p)
    if is_sharpness_aware(cfg.optimizer) and cfg.embedding_update != "fused":
        raise ValueError(f"optimizer={cfg.optimizer} trains the dense part only and needs embedding_update=fused "
                         "(its second pass reuses the fused tables' lookups)")
    dense_opt = make_optimizer(cfg.optimizer, dense, lr=cfg.lr, rho=cfg.rho, weight_decay=cfg.weight_decay)
    if cfg.embedding_update == "fused":
        return Optimizers(dense_opt, None, dense, [])
    if cfg.embedding_optimizer not in TABLE_OPTIMIZERS:
        raise ValueError(f"embedding optimizer must be one of {sorted(TABLE_OPTIMIZERS)}, got {cfg.embedding_optimizer!r}")
    table_opt = TABLE_OPTIMIZERS[cfg.embedding_optimizer](tables, lr=cfg.embedding_lr)
    clipped = dense + tables if cfg.grad_clip_scope == "full" else dense
    return Optimizers(dense_opt, table_opt, clipped, tables)


def l2_penalty(tables: list[torch.Tensor], l2: float) -> torch.Tensor | None:
    """FuxiCTR's embedding regulariser with p = 2: lambda / 2 * sum ||W||^2 over whole tables."""
    if not l2 or not tables:
        return None
    return (l2 / 2) * sum(t.pow(2).sum() for t in tables)


def lookup_l2_penalty(field_emb: torch.Tensor, l2: float) -> torch.Tensor:
    """The fused tables' stand-in: lambda / 2 * mean over the batch of sum_f ||e_bf||^2."""
    return (l2 / 2) * field_emb.pow(2).sum(dim=(1, 2)).mean()


def selection_metric(monitor: str, auc: float, logloss: float) -> float:
    """What model selection maximises: AUC, or AUC - logloss (the official ``{'AUC': 1, 'logloss': -1}``)."""
    if monitor == "auc":
        return auc
    if monitor == "auc_minus_logloss":
        return auc - logloss
    raise ValueError(f"monitor must be auc or auc_minus_logloss, got {monitor!r}")
