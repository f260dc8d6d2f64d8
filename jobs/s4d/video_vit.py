"""The shared video ViT encoder of S4D (VideoMAE's): tubelet embedding, fixed sine-cosine position
table, pre-norm transformer blocks. A static image enters as a two-frame clip (the image
repeated), i.e. one temporal token row, so images and videos share every weight (S4D's
"static images as two-frame clips" of its dual-modal pretraining)."""

from __future__ import annotations

import math

import torch
from torch import nn

from jobs.s4d.moae import MixtureOfAdapterExperts


def sincos_table(positions: int, dim: int) -> torch.Tensor:
    """VideoMAE's fixed 1-D sine-cosine table over flattened token positions, (positions, dim)."""
    pos = torch.arange(positions, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(positions, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


def standardise(clips: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per clip: the role of VideoMAE's ImageNet mean/std normalisation,
    per sample because lighting (gain, gamma) varies per face."""
    mean = clips.mean(dim=(1, 2, 3), keepdim=True)
    return (clips - mean) / (clips.std(dim=(1, 2, 3), keepdim=True) + 1e-5)


class Block(nn.Module):
    """Pre-norm attention + MLP; with ``moae`` a Mixture of Adapter Experts beside the MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, moae: MixtureOfAdapterExperts | None = None) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.moae = moae

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        h = self.norm2(x)
        out = self.mlp(h)
        if self.moae is not None:
            out = out + self.moae(h)
        return x + out


class VideoViT(nn.Module):
    """Tokens of (B, T, H, W) grayscale clips -> (B, N, dim) features; ``keep`` (B, n_keep) indices
    encode only the visible tokens (MAE pretraining)."""

    def __init__(self, image_size: int = 32, patch: int = 8, frames: int = 8, tubelet: int = 2, dim: int = 96,
                 depth: int = 4, heads: int = 4) -> None:
        super().__init__()
        if image_size % patch or frames % tubelet:
            raise ValueError("image_size must be a multiple of patch and frames of tubelet")
        self.patch, self.tubelet, self.dim = patch, tubelet, dim
        self.spatial = (image_size // patch) ** 2
        self.embed = nn.Conv3d(1, dim, kernel_size=(tubelet, patch, patch), stride=(tubelet, patch, patch))
        self.register_buffer("pos", sincos_table(self.spatial * frames // tubelet, dim), persistent=False)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def tokens(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.shape[1] == 1:  # a still image: the two-frame clip of S4D
            clips = clips.repeat(1, self.tubelet, 1, 1)
        clips = standardise(clips)
        x = self.embed(clips[:, None]).flatten(2).transpose(1, 2)
        return x + self.pos[: x.shape[1]]

    def forward(self, clips: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        x = self.tokens(clips)
        if keep is not None:
            x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def add_moae(self, layers: int, num_experts: int, top_k: int, bottleneck: int, scale: float, noisy: bool = True) -> None:
        """Put a Mixture of Adapter Experts into the last ``layers`` blocks (S4D: the upper half)."""
        for block in list(self.blocks)[len(self.blocks) - layers:]:
            block.moae = MixtureOfAdapterExperts(self.dim, num_experts, top_k, bottleneck, scale, noisy)

    def moae_layers(self) -> list[MixtureOfAdapterExperts]:
        return [b.moae for b in self.blocks if b.moae is not None]
