"""The fine-tuning model of S4D: the pretrained encoder, mean pooling of its tokens (VideoMAE's
``use_mean_pooling``), and one linear head per task (dynamic clips, static images)."""

from __future__ import annotations

import torch
from torch import nn

from jobs.s4d.video_vit import VideoViT


class ExpressionClassifier(nn.Module):
    def __init__(self, encoder: VideoViT, classes: int, tasks: tuple[str, ...] = ("dynamic", "static")) -> None:
        super().__init__()
        self.encoder = encoder
        self.fc_norm = nn.LayerNorm(encoder.dim)
        self.heads = nn.ModuleDict({t: nn.Linear(encoder.dim, classes) for t in tasks})
        for head in self.heads.values():
            nn.init.trunc_normal_(head.weight, std=0.02)
            nn.init.zeros_(head.bias)

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        return self.heads[task](self.fc_norm(self.encoder(x).mean(1)))

    def aux_loss(self) -> torch.Tensor:
        """Sum of the MoAE load-balancing losses of the last forward (0 without MoAE)."""
        layers = self.encoder.moae_layers()
        return sum((m.aux_loss for m in layers), torch.zeros(()))
