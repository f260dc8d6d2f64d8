"""DLinear and PatchTST: shapes, decomposition, patching, RevIN."""

from __future__ import annotations

import torch

from training.forecasting.dlinear import DLinear, DLinearConfig, SeriesDecomposition
from training.forecasting.patchtst import PatchTST, PatchTSTConfig, RevIN

torch.set_num_threads(1)


def test_dlinear_shapes_shared_and_individual() -> None:
    x = torch.randn(4, 96, 3)
    for individual in (False, True):
        m = DLinear(DLinearConfig(seq_len=96, pred_len=24, n_channels=3, individual=individual))
        assert m(x).shape == (4, 24, 3)
        assert m(x, x_mark=torch.zeros(4, 96, 4)).shape == (4, 24, 3)
    shared = DLinear(DLinearConfig(seq_len=96, pred_len=24, n_channels=3))
    individual = DLinear(DLinearConfig(seq_len=96, pred_len=24, n_channels=3, individual=True))
    assert shared.seasonal.shape == (1, 24, 96) and individual.seasonal.shape == (3, 24, 96)


def test_decomposition_sums_back_and_keeps_constants() -> None:
    x = torch.randn(2, 96, 2)
    seasonal, trend = SeriesDecomposition(25)(x)
    assert torch.allclose(seasonal + trend, x, atol=1e-6)
    const = torch.full((1, 50, 1), 3.0)
    s, t = SeriesDecomposition(25)(const)
    assert torch.allclose(t, const) and torch.allclose(s, torch.zeros_like(s), atol=1e-6)


def test_dlinear_starts_as_a_moving_average_forecast() -> None:
    m = DLinear(DLinearConfig(seq_len=96, pred_len=8, n_channels=1))
    with torch.no_grad():
        m.seasonal_bias.zero_()
        m.trend_bias.zero_()
    x = torch.full((1, 96, 1), 2.0)
    assert torch.allclose(m(x), torch.full((1, 8, 1), 2.0), atol=1e-5)


def test_patchtst_shapes_and_patches() -> None:
    c = PatchTSTConfig(seq_len=96, pred_len=48, n_channels=3)
    assert c.patch_num == 12
    m = PatchTST(c).eval()
    x = torch.arange(96, dtype=torch.float32).view(1, 96, 1).repeat(2, 1, 3)
    assert m(x).shape == (2, 48, 3)
    p = m.patches(x)
    assert p.shape == (2, 3, 12, 16)
    assert torch.equal(p[0, 0, 1], torch.arange(8, 24, dtype=torch.float32))
    assert torch.equal(p[0, 0, -1], torch.tensor([88.0 + i for i in range(8)] + [95.0] * 8))  # end padding


def test_patchtst_channel_independence() -> None:
    m = PatchTST(PatchTSTConfig(seq_len=96, pred_len=24, n_channels=3)).eval()
    x = torch.randn(2, 96, 3)
    y = m(x)
    x2 = x.clone()
    x2[:, :, 2] += torch.randn(2, 96)
    y2 = m(x2)
    assert torch.allclose(y[:, :, :2], y2[:, :, :2], atol=1e-5)  # other channels untouched
    assert not torch.allclose(y[:, :, 2], y2[:, :, 2])


def test_revin_round_trip() -> None:
    r = RevIN(3)
    with torch.no_grad():
        r.weight.uniform_(0.5, 2.0)
        r.bias.uniform_(-1, 1)
    x = torch.randn(4, 96, 3) * 5 + 2
    z, mean, std = r.normalize(x)
    assert torch.allclose(r.denormalize(z, mean, std), x, atol=1e-4)
