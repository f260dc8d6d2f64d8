"""PatchTST: "A Time Series is Worth 64 Words" (Nie et al., ICLR 2023), supervised variant.

What is implemented, as in the paper and the authors' ``PatchTST_supervised`` code:

* **RevIN** (Kim et al., ICLR 2022): each channel of each window is normalised
  by its own mean and standard deviation (the affine map is optional: the
  authors' ETTh1 script runs RevIN without it, our default too)
  and the forecast is de-normalised the same way;
* **channel independence**: every channel is an independent univariate
  sequence that shares all weights (the batch is ``B*C`` sequences);
* **patching**: the series is padded at the end by repeating its last value
  ``stride`` times, then cut into patches of ``patch_len`` with ``stride``
  (L=96, P=16, S=8: 12 patches); a linear layer embeds each patch into
  ``d_model`` and a learnable positional encoding is added;
* **Transformer encoder**: ``n_layers`` post-norm layers of multi-head
  self-attention (scaled dot product, with the code's *residual attention*:
  each layer adds the previous layer's pre-softmax scores) and a GELU
  feed-forward, with **BatchNorm** instead of LayerNorm (the paper's choice);
* **flatten head**: the ``patch_num x d_model`` representation is flattened
  and projected linearly to the horizon.

Defaults are the authors' ETTh1 settings (small model for the small ETT
datasets): 3 layers, 4 heads, d_model 16, d_ff 128, dropout 0.3, head
dropout 0, patch 16, stride 8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class PatchTSTConfig:
    seq_len: int = 96
    pred_len: int = 96
    n_channels: int = 7
    patch_len: int = 16
    stride: int = 8
    d_model: int = 16
    n_heads: int = 4
    n_layers: int = 3
    d_ff: int = 128
    dropout: float = 0.3
    attn_dropout: float = 0.0
    head_dropout: float = 0.0
    revin: bool = True
    revin_affine: bool = False
    """The authors' ETTh1 script: RevIN without the affine part."""
    residual_attention: bool = True

    @property
    def patch_num(self) -> int:
        return (self.seq_len - self.patch_len) // self.stride + 1 + 1  # +1: the end padding


class RevIN(nn.Module):
    """Reversible instance normalisation over the time axis of ``[B, L, C]``."""

    def __init__(self, n_channels: int, affine: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(n_channels))
            self.bias = nn.Parameter(torch.zeros(n_channels))

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean = x.mean(dim=1, keepdim=True).detach()
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()
        z = (x - mean) / std
        if self.affine:
            z = z * self.weight + self.bias
        return z, mean, std

    def denormalize(self, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        if self.affine:
            y = (y - self.bias) / (self.weight + self.eps * self.eps)
        return y * std + mean


class BatchNormTokens(nn.Module):
    """BatchNorm1d over d_model for ``[N, T, D]`` tokens."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class EncoderLayer(nn.Module):
    def __init__(self, c: PatchTSTConfig) -> None:
        super().__init__()
        self.n_heads = c.n_heads
        self.head_dim = c.d_model // c.n_heads
        self.qkv = nn.Linear(c.d_model, 3 * c.d_model)
        self.out = nn.Linear(c.d_model, c.d_model)
        self.attn_dropout = nn.Dropout(c.attn_dropout)
        self.dropout_attn = nn.Dropout(c.dropout)
        self.norm_attn = BatchNormTokens(c.d_model)
        self.ff = nn.Sequential(nn.Linear(c.d_model, c.d_ff), nn.GELU(), nn.Dropout(c.dropout),
                                nn.Linear(c.d_ff, c.d_model))
        self.dropout_ff = nn.Dropout(c.dropout)
        self.norm_ff = BatchNormTokens(c.d_model)

    def forward(self, x: torch.Tensor, prev: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # [N, h, T, T]
        if prev is not None:
            scores = scores + prev
        attn = self.attn_dropout(torch.softmax(scores, dim=-1))
        ctx = torch.matmul(attn, v).transpose(1, 2).reshape(n, t, d)
        x = self.norm_attn(x + self.dropout_attn(self.out(ctx)))
        x = self.norm_ff(x + self.dropout_ff(self.ff(x)))
        return x, scores


class PatchTST(nn.Module):
    """``forward(x [B, L, C], x_mark=None) -> [B, H, C]``."""

    def __init__(self, config: PatchTSTConfig) -> None:
        super().__init__()
        self.config = c = config
        if c.d_model % c.n_heads:
            raise ValueError("d_model must be divisible by n_heads")
        self.revin = RevIN(c.n_channels, c.revin_affine) if c.revin else None
        self.patch_embedding = nn.Linear(c.patch_len, c.d_model)
        self.position = nn.Parameter(torch.empty(c.patch_num, c.d_model).uniform_(-0.02, 0.02))
        self.dropout = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(EncoderLayer(c) for _ in range(c.n_layers))
        self.head_dropout = nn.Dropout(c.head_dropout)
        self.head = nn.Linear(c.patch_num * c.d_model, c.pred_len)
        # patch k covers steps [k*stride, k*stride + patch_len) of the end-padded series (a gather exports
        # to ONNX cleanly, Tensor.unfold does not)
        index = torch.arange(c.patch_num)[:, None] * c.stride + torch.arange(c.patch_len)[None, :]
        self.register_buffer("patch_index", index, persistent=False)

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L, C]`` -> ``[B, C, patch_num, patch_len]`` (end padding by the last value)."""
        c = self.config
        series = x.transpose(1, 2)  # [B, C, L]
        series = torch.cat([series, series[:, :, -1:].expand(-1, -1, c.stride)], dim=-1)
        return series[:, :, self.patch_index]

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        if self.revin is not None:
            x, mean, std = self.revin.normalize(x)
        p = self.patches(x)
        b, ch, n, _ = p.shape
        z = self.dropout(self.patch_embedding(p).reshape(b * ch, n, c.d_model) + self.position)
        prev = None
        for layer in self.layers:
            z, scores = layer(z, prev)
            prev = scores if c.residual_attention else None
        y = self.head(self.head_dropout(z.reshape(b, ch, n * c.d_model)))  # [B, C, H]
        y = y.transpose(1, 2)
        if self.revin is not None:
            y = self.revin.denormalize(y, mean, std)
        return y
