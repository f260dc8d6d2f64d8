"""A small convolutional network over MELLM's image inputs with two heads: the emotion
(negative / positive / surprise) and the action units (multi-label). It stands in for the
paper's vision-language model as the reader of the motion-enhanced map; the comparison of
inputs is the same question at a CPU's scale."""

from __future__ import annotations

import torch
from torch import nn


class MicroExpressionNet(nn.Module):
    def __init__(self, classes: int, action_units: int, width: int = 32, dropout: float = 0.2) -> None:
        super().__init__()

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

        self.features = nn.Sequential(stage(3, width // 2), stage(width // 2, width), stage(width, 2 * width),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.emotion = nn.Linear(2 * width, classes)
        self.action_units = nn.Linear(2 * width, action_units)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.emotion(h), self.action_units(h)
