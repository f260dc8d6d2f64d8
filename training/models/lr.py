"""Logistic regression: one learned weight per feature value, plus a bias.

The per-value weight is a 1-wide embedding, so LR runs through the same
embedding machinery (EBC in training, gathers in the exported graph) as
every other model. Multi-valued features contribute their pooled weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LRConfig:
    pass


class LogisticRegression(nn.Module):
    def __init__(self, num_fields: int, embedding_dim: int, num_dense: int, config: LRConfig | None = None) -> None:
        super().__init__()
        self.embedding_dim = 1
        self.bias = nn.Parameter(torch.zeros(1))
        self.dense = nn.Linear(num_dense, 1, bias=False) if num_dense else None

    def forward(self, field_emb: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        logit = field_emb.sum(dim=(1, 2)) + self.bias
        if self.dense is not None:
            logit = logit + self.dense(dense).squeeze(1)
        return logit
