"""The guard: keep PIR's revision only in the channels and horizon blocks where it beat the backbone.

After fitting, the revised and base forecasts are compared on held-out
windows PIR never trained on (the calibration scheme's *check* segment).
For every channel ``c`` and horizon block ``j`` (``blocks`` equal slices of
the H steps) the per-window paired difference

    d_i = mean_{t in block j} (ŷ_itc - y_itc)² - (ȳ_itc - y_itc)²

is tested one-sided with **batch means**: consecutive windows overlap and
their errors are strongly autocorrelated, so the check windows are cut into
``n_batches`` contiguous batches and the t statistic is taken over the batch
means (the classic batch-means variance estimate of a correlated series).
The revision is kept where ``mean(d) < 0`` and ``t <= -t_min``; elsewhere
the bundle sets α = β = 0 (PIR's ``keep`` buffer), so the served forecast
there *is* the backbone's. ``t_min = 1`` (one-sided ~84 % under
independent batch means): a cell must beat the backbone by about one
standard error to be trusted, which turns the no-gain cells into exact 0 %
while keeping the cells with a steady gain; 0 keeps any cell that helped on
average (more gain, more risk). Pure numpy over summary statistics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class GuardDecision:
    keep: np.ndarray
    """[C, blocks] bool: revision kept."""
    blocks: list[tuple[int, int]]
    """Horizon steps [begin, end) of each block."""
    mean_diff: np.ndarray
    """[C, blocks] mean paired difference of MSE (revised - base), scaled units."""
    t_stat: np.ndarray
    base_mse: np.ndarray
    """[C, blocks] base MSE on the check windows."""
    n_windows: int
    n_batches: int
    t_min: float

    def step_mask(self, horizon: int) -> np.ndarray:
        """[C, H] float32 0/1: the ``keep`` buffer of PIR."""
        out = np.zeros((self.keep.shape[0], horizon), dtype=np.float32)
        for j, (b, e) in enumerate(self.blocks):
            out[:, b:e] = self.keep[:, j:j + 1]
        return out

    def to_json(self) -> dict:
        d = asdict(self)
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in d.items()}

    @property
    def kept_fraction(self) -> float:
        return float(self.keep.mean())


def horizon_blocks(horizon: int, blocks: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, horizon, min(blocks, horizon) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def paired_t(diff: np.ndarray, n_batches: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and batch-means t statistic of ``diff`` [N, ...] along axis 0."""
    n = len(diff)
    nb = max(2, min(n_batches, n))
    means = np.stack([part.mean(axis=0) for part in np.array_split(diff, nb)])
    sd = means.std(axis=0, ddof=1)
    mean = diff.mean(axis=0)
    t = np.where(sd > 0, mean / (sd / np.sqrt(nb) + 1e-12), np.where(mean < 0, -np.inf, np.inf))
    return mean, t, nb


def decide(base: np.ndarray, revised: np.ndarray, y: np.ndarray, blocks: int = 4, n_batches: int = 10,
           t_min: float = 1.0) -> GuardDecision:
    """Guard decisions from check windows: ``base``, ``revised``, ``y`` [N, H, C] in time order."""
    if len(y) < 2:
        raise ValueError("the guard needs at least 2 check windows")
    h = y.shape[1]
    spans = horizon_blocks(h, blocks)
    err_b, err_r = (base - y) ** 2, (revised - y) ** 2
    diff = np.stack([(err_r[:, b:e] - err_b[:, b:e]).mean(axis=1) for b, e in spans], axis=-1)  # [N, C, blocks]
    base_mse = np.stack([err_b[:, b:e].mean(axis=(0, 1)) for b, e in spans], axis=-1)
    mean, t, nb = paired_t(diff, n_batches)
    keep = (mean < 0) & (t <= -t_min)
    return GuardDecision(keep, spans, mean, t, base_mse, len(y), nb, t_min)
