"""Optimizers and the training recipe's moving parts.

* ``registry``: every optimizer a config can name (torch's, SAM, LightSAM) and ``make_optimizer``;
* ``sam``: SAM and the LightSAM forms (closure-driven steps);
* ``recipe``: how a TrainConfig becomes the dense and embedding optimizers, initialisation,
  embedding L2, LR decay on plateau and model selection.
"""

from training.optim.recipe import (
    FUSED_EMBEDDING_OPTIMIZERS,
    MIN_LR,
    Optimizers,
    build_optimizers,
    check_fused_optimizer,
    embedding_init_fn,
    l2_penalty,
    lookup_l2_penalty,
    selection_metric,
    xavier_init,
)
from training.optim.registry import OPTIMIZERS, is_sharpness_aware, make_optimizer, needs_closure, optimizer_names
from training.optim.sam import SAM, LightSAMAdaGrad, LightSAMAdaGradNorm, LightSAMAdam

__all__ = [
    "FUSED_EMBEDDING_OPTIMIZERS", "MIN_LR", "OPTIMIZERS", "Optimizers", "SAM", "LightSAMAdaGrad",
    "LightSAMAdaGradNorm", "LightSAMAdam", "build_optimizers", "check_fused_optimizer", "embedding_init_fn",
    "is_sharpness_aware", "l2_penalty", "lookup_l2_penalty", "make_optimizer", "needs_closure",
    "optimizer_names", "selection_metric", "xavier_init",
]
