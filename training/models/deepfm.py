"""DeepFM (Guo et al., IJCAI 2017): FM and a DNN sharing one embedding.

logit = b + sum_f w_f  +  sum_{i<j} <e_i, e_j>  +  DNN([e_1..e_F])

The first-order weights w_f ride along as one extra embedding column
(width d+1: columns 0..d-1 are e_f, column d is w_f) so the model keeps the
family's forward signature. The pairwise term uses the O(Fd) identity
0.5 * ((sum_f e_f)^2 - sum_f e_f^2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from training.models.common import MLP, flatten_inputs


@dataclass
class DeepFMConfig:
    hidden_units: tuple[int, ...] = (400, 400, 400)
    dropout: float = 0.2
    batch_norm: bool = False


class DeepFM(nn.Module):
    def __init__(self, num_fields: int, embedding_dim: int, num_dense: int, config: DeepFMConfig | None = None) -> None:
        super().__init__()
        cfg = config or DeepFMConfig()
        self.d = embedding_dim
        self.embedding_dim = embedding_dim + 1
        self.bias = nn.Parameter(torch.zeros(1))
        self.dense_linear = nn.Linear(num_dense, 1, bias=False) if num_dense else None
        self.dnn = MLP(num_fields * embedding_dim + num_dense, cfg.hidden_units, cfg.dropout, cfg.batch_norm, out_dim=1)

    def forward(self, field_emb: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        emb, first = field_emb[..., : self.d], field_emb[..., self.d]
        linear = first.sum(dim=1) + self.bias
        if self.dense_linear is not None:
            linear = linear + self.dense_linear(dense).squeeze(1)
        pairwise = 0.5 * (emb.sum(dim=1).pow(2) - emb.pow(2).sum(dim=1)).sum(dim=1)
        deep = self.dnn(flatten_inputs(emb, dense)).squeeze(1)
        return linear + pairwise + deep
