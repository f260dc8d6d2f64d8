"""DCN-V2 (Wang et al., WWW 2021): full-rank cross network plus a DNN.

Cross layer: x_{l+1} = x_0 * (W_l x_l + b_l) + x_l, with W_l in R^{n x n}
(n = F*d + D). ``structure`` selects the paper's two combinations:
"stacked" (cross then DNN) or "parallel" (cross and DNN side by side,
outputs concatenated); the logit is a linear layer on the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from training.models.common import MLP, flatten_inputs


@dataclass
class DCNv2Config:
    cross_layers: int = 3
    hidden_units: tuple[int, ...] = (400, 400, 400)
    dropout: float = 0.2
    batch_norm: bool = False
    structure: Literal["stacked", "parallel"] = "parallel"


class CrossNetV2(nn.Module):
    def __init__(self, dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class DCNv2(nn.Module):
    def __init__(self, num_fields: int, embedding_dim: int, num_dense: int, config: DCNv2Config | None = None) -> None:
        super().__init__()
        cfg = config or DCNv2Config()
        self.embedding_dim = embedding_dim
        self.structure = cfg.structure
        n = num_fields * embedding_dim + num_dense
        self.cross = CrossNetV2(n, cfg.cross_layers)
        dnn_in = n
        self.dnn = MLP(dnn_in, cfg.hidden_units, cfg.dropout, cfg.batch_norm)
        out_in = self.dnn.out_dim if cfg.structure == "stacked" else n + self.dnn.out_dim
        self.out = nn.Linear(out_in, 1)

    def forward(self, field_emb: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        x0 = flatten_inputs(field_emb, dense)
        if self.structure == "stacked":
            h = self.dnn(self.cross(x0))
        else:
            h = torch.cat([self.cross(x0), self.dnn(x0)], dim=1)
        return self.out(h).squeeze(1)
