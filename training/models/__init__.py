"""The CTR model family: one file per model, one forward signature.

``build_head(name, ...)`` returns an interaction head
``forward(field_emb [B, F, d], dense [B, D]) -> logits [B]``; ``CTRModel``
(training/sparse.py) puts a TorchRec EmbeddingBagCollection in front of it.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any

from torch import nn

from training.models.dcnv2 import DCNv2, DCNv2Config
from training.models.deepfm import DeepFM, DeepFMConfig
from training.models.dlf import DLF, DLFConfig
from training.models.dlf_branch_softmax import BranchSoftmaxDLF, BranchSoftmaxDLFConfig
from training.models.dmoe import DMoE, DMoEConfig
from training.models.finalmlp import FinalMLP, FinalMLPConfig
from training.models.lr import LogisticRegression, LRConfig

MODELS: dict[str, tuple[type[nn.Module], type]] = {
    "lr": (LogisticRegression, LRConfig),
    "deepfm": (DeepFM, DeepFMConfig),
    "dcnv2": (DCNv2, DCNv2Config),
    "finalmlp": (FinalMLP, FinalMLPConfig),
    "dlf": (DLF, DLFConfig),
    "dlf_branch_softmax": (BranchSoftmaxDLF, BranchSoftmaxDLFConfig),
    "dmoe": (DMoE, DMoEConfig),
}


def make_config(name: str, overrides: dict[str, Any] | None = None) -> Any:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    cls = MODELS[name][1]
    overrides = dict(overrides or {})
    known = {f.name for f in fields(cls)} if is_dataclass(cls) else set()
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"{name}: unknown hyperparameters {sorted(unknown)}; known: {sorted(known)}")
    for key, value in overrides.items():
        if isinstance(value, list):
            overrides[key] = tuple(value)
    return cls(**overrides)


def build_head(name: str, num_fields: int, embedding_dim: int, num_dense: int, config: Any = None) -> nn.Module:
    model_cls, _ = MODELS[name] if name in MODELS else (None, None)
    if model_cls is None:
        raise KeyError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return model_cls(num_fields, embedding_dim, num_dense, config if config is not None else make_config(name))
