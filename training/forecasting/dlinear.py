"""DLinear: "Are Transformers Effective for Time Series Forecasting?" (Zeng et al., AAAI 2023).

The input window is decomposed by a moving average (kernel 25, the series
padded at both ends by repeating its first/last value, stride 1) into a trend
and a seasonal remainder; one linear layer over time maps each part from the
look-back ``L`` to the horizon ``H`` and the two outputs are summed. With
``individual=True`` every channel has its own pair of layers, otherwise the
layers are shared by all channels (the paper's default and its reported
configuration for ETT). As in the authors' code, both layers start at the
average ``1/L`` (a moving-average forecast). No normalisation of the input
(the paper's DLinear; NLinear is the variant that subtracts the last value).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class DLinearConfig:
    seq_len: int = 96
    pred_len: int = 96
    n_channels: int = 7
    kernel_size: int = 25
    """Moving-average window of the decomposition (paper: 25)."""
    individual: bool = False
    """One linear pair per channel (True) or shared by all channels (False, the paper's default)."""


class MovingAverage(nn.Module):
    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, C]
        front = (self.kernel_size - 1) // 2
        back = self.kernel_size - 1 - front
        padded = torch.cat([x[:, :1].expand(-1, front, -1), x, x[:, -1:].expand(-1, back, -1)], dim=1)
        return nn.functional.avg_pool1d(padded.transpose(1, 2), self.kernel_size, stride=1).transpose(1, 2)


class SeriesDecomposition(nn.Module):
    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.moving_average = MovingAverage(kernel_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        trend = self.moving_average(x)
        return x - trend, trend


class DLinear(nn.Module):
    """``forward(x [B, L, C], x_mark=None) -> [B, H, C]``."""

    def __init__(self, config: DLinearConfig) -> None:
        super().__init__()
        self.config = c = config
        self.decomposition = SeriesDecomposition(c.kernel_size)
        n = c.n_channels if c.individual else 1
        self.seasonal = nn.Parameter(torch.full((n, c.pred_len, c.seq_len), 1.0 / c.seq_len))
        self.trend = nn.Parameter(torch.full((n, c.pred_len, c.seq_len), 1.0 / c.seq_len))
        bound = 1.0 / c.seq_len ** 0.5  # nn.Linear's default bias init
        self.seasonal_bias = nn.Parameter(torch.empty(n, c.pred_len).uniform_(-bound, bound))
        self.trend_bias = nn.Parameter(torch.empty(n, c.pred_len).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None) -> torch.Tensor:
        seasonal, trend = self.decomposition(x)
        s = seasonal.transpose(1, 2)  # [B, C, L]
        t = trend.transpose(1, 2)
        # [B, C, L] x [n, H, L] -> [B, C, H]; n is 1 (shared) or C (individual)
        out = (torch.einsum("bcl,chl->bch", s, self.seasonal.expand(s.shape[1], -1, -1)) + self.seasonal_bias
               + torch.einsum("bcl,chl->bch", t, self.trend.expand(t.shape[1], -1, -1)) + self.trend_bias)
        return out.transpose(1, 2)
