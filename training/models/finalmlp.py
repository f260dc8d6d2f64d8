"""FinalMLP (Mao et al., AAAI 2023): two MLP streams with feature gating,
fused by multi-head bilinear interaction aggregation.

Stream k sees gated inputs x_k = 2 sigmoid(G_k(c_k)) * e, where e is the
flattened embedding; our reading takes the stream's gating context c_k to
be e itself (the paper also allows chosen feature subsets). Fusion of
h1 = MLP_1(x_1), h2 = MLP_2(x_2), split into H heads:

    logit = b + sum_h [ w1_h . h1_h + w2_h . h2_h + h1_h^T W3_h h2_h ]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.models.common import MLP, flatten_inputs


@dataclass
class FinalMLPConfig:
    mlp1_hidden_units: tuple[int, ...] = (400, 400, 400)
    mlp2_hidden_units: tuple[int, ...] = (800,)
    dropout: float = 0.2
    batch_norm: bool = True
    feature_gating: bool = True
    gate_hidden: int = 256
    num_heads: int = 2


class FeatureGate(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * torch.sigmoid(self.net(x)) * x


class BilinearFusion(nn.Module):
    def __init__(self, dim1: int, dim2: int, heads: int) -> None:
        super().__init__()
        if dim1 % heads or dim2 % heads:
            raise ValueError(f"stream widths {dim1}, {dim2} must be divisible by num_heads={heads}")
        self.heads, self.d1, self.d2 = heads, dim1 // heads, dim2 // heads
        self.w1 = nn.Linear(dim1, 1)
        self.w2 = nn.Linear(dim2, 1, bias=False)
        self.w3 = nn.Parameter(torch.empty(heads, self.d1, self.d2))
        nn.init.xavier_normal_(self.w3)

    def forward(self, h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        a = h1.view(-1, self.heads, self.d1)
        b = h2.view(-1, self.heads, self.d2)
        bilinear = torch.einsum("bhi,hij,bhj->b", a, self.w3, b)
        return self.w1(h1).squeeze(1) + self.w2(h2).squeeze(1) + bilinear


class FinalMLP(nn.Module):
    def __init__(self, num_fields: int, embedding_dim: int, num_dense: int, config: FinalMLPConfig | None = None) -> None:
        super().__init__()
        cfg = config or FinalMLPConfig()
        self.embedding_dim = embedding_dim
        n = num_fields * embedding_dim + num_dense
        self.gate1 = FeatureGate(n, cfg.gate_hidden) if cfg.feature_gating else nn.Identity()
        self.gate2 = FeatureGate(n, cfg.gate_hidden) if cfg.feature_gating else nn.Identity()
        self.mlp1 = MLP(n, cfg.mlp1_hidden_units, cfg.dropout, cfg.batch_norm)
        self.mlp2 = MLP(n, cfg.mlp2_hidden_units, cfg.dropout, cfg.batch_norm)
        self.fusion = BilinearFusion(self.mlp1.out_dim, self.mlp2.out_dim, cfg.num_heads)

    def forward(self, field_emb: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        x = flatten_inputs(field_emb, dense)
        return self.fusion(self.mlp1(self.gate1(x)), self.mlp2(self.gate2(x)))
