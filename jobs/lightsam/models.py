"""The image classifier of the LightSAM job's offline task (scikit-learn's 8x8 digits)."""

from __future__ import annotations

import torch
from torch import nn


class DigitsMLP(nn.Module):
    """64 pixels -> hidden ReLU layers -> 10 class logits."""

    def __init__(self, in_dim: int = 64, hidden: int = 64, layers: int = 2, classes: int = 10) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_dim
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        blocks.append(nn.Linear(width, classes))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
