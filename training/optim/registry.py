"""Every optimizer a training config can name, and the one factory that builds them.

``make_optimizer("lightsam", params, lr=..., rho=...)`` is what the CTR trainer
(``recast train --set optimizer=lightsam``) and the jobs use. Sharpness-aware optimizers set
``needs_closure``: their ``step`` takes a closure that recomputes the loss (see sam.py).
"""

from __future__ import annotations

from typing import Iterable

import torch

from training.optim.sam import SAM, LightSAMAdaGrad, LightSAMAdaGradNorm, LightSAMAdam

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adagrad": torch.optim.Adagrad,
    "sgd": torch.optim.SGD,
    "sam": SAM,
    "lightsam-adagradnorm": LightSAMAdaGradNorm,
    "lightsam-adagrad": LightSAMAdaGrad,
    "lightsam-adam": LightSAMAdam,
}
ALIASES = {"lightsam": "lightsam-adagradnorm"}
"""The paper's first and main form."""
SHARPNESS_AWARE = {"sam", "lightsam-adagradnorm", "lightsam-adagrad", "lightsam-adam"}


def optimizer_names() -> list[str]:
    return sorted(OPTIMIZERS) + sorted(ALIASES)


def make_optimizer(name: str, params: Iterable, lr: float, rho: float = 0.05,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    key = ALIASES.get(name, name)
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {optimizer_names()}")
    kwargs: dict = {"lr": lr, "weight_decay": weight_decay}
    if key in SHARPNESS_AWARE:
        kwargs["rho"] = rho
    return OPTIMIZERS[key](params, **kwargs)


def is_sharpness_aware(name: str) -> bool:
    return ALIASES.get(name, name) in SHARPNESS_AWARE


def needs_closure(optimizer: torch.optim.Optimizer) -> bool:
    return bool(getattr(optimizer, "needs_closure", False))
