"""Building blocks shared by the CTR model family.

Every interaction model ("head") has the same forward signature,
``forward(field_emb: [B, F, d], dense: [B, D]) -> logits [B]``, so that the
embedding lookup can be TorchRec's EmbeddingBagCollection during training
and plain ``nn.Embedding`` gathers in the exported inference graph, while
the head is shared verbatim between the two.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch
from torch import nn


class InteractionHead(Protocol):
    embedding_dim: int
    """Width each field's embedding must have (may differ from the shared d)."""

    def __call__(self, field_emb: torch.Tensor, dense: torch.Tensor) -> torch.Tensor: ...


class MLP(nn.Module):
    """Linear -> (BatchNorm) -> activation -> dropout, repeated; optional output unit."""

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        dropout: float = 0.0,
        batch_norm: bool = False,
        out_dim: int | None = None,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_dim
        for width in hidden:
            layers.append(nn.Linear(dim, width))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(activation())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            dim = width
        if out_dim is not None:
            layers.append(nn.Linear(dim, out_dim))
            dim = out_dim
        self.net = nn.Sequential(*layers)
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def flatten_inputs(field_emb: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """[B, F, d] and [B, D] -> [B, F*d + D]: the input of implicit (DNN) parts."""
    flat = field_emb.flatten(1)
    if dense.shape[1] == 0:
        return flat
    return torch.cat([flat, dense], dim=1)
