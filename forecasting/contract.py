"""The forecasting contract both sides read: time features, window conventions, normalisation, store keys.

Training (training/forecasting/) and the torch-free runtime (this package) must
agree on these to the bit, as features/spec.py is for the CTR models:

* **windows**: a forecast's *origin* is its last input step; the input covers
  ``origin - (L-1)·step .. origin`` and the horizon ``origin + step ..
  origin + H·step``; a pair (window, target) *matures* at its last target step.
* :func:`time_features` - calendar covariates from epoch milliseconds, the
  ``timeF`` encoding of Time-Series-Library (hour of day, day of week, day of
  month, day of year, each scaled to [-0.5, 0.5]).
* :func:`instance_norm` - per-window, per-channel z-normalisation (RevIN
  without the affine part): what the retrieval compares and what the
  retrieved targets are expressed in.
* :func:`unit_keys` / :func:`normalised_targets` - the retrieval store's
  format: unit-length instance-normalised keys (a dot product is the Pearson
  correlation of two windows) and targets normalised by their own window.
"""

from __future__ import annotations

import numpy as np

N_TIME_FEATURES = 4
EPS = 1e-5


def time_features(ts_ms: np.ndarray) -> np.ndarray:
    """``[..., 4]`` float32: hour/23, weekday/6, (day-1)/30, (yearday-1)/365, each minus 0.5.

    ``ts_ms`` are epoch milliseconds (UTC wall clock of the series: the CSV
    timestamps are taken as naive local times and encoded as if UTC, so the
    features equal the calendar fields written in the file).
    """
    ts = np.asarray(ts_ms, dtype=np.int64)
    sec = ts // 1000
    days = sec // 86400
    hour = (sec % 86400) // 3600
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0 as in pandas
    dt = days.astype("datetime64[D]")
    year_start = dt.astype("datetime64[Y]").astype("datetime64[D]")
    month_start = dt.astype("datetime64[M]").astype("datetime64[D]")
    yearday = (dt - year_start).astype(np.int64)  # 0-based
    monthday = (dt - month_start).astype(np.int64)  # 0-based
    out = np.stack([hour / 23.0 - 0.5, weekday / 6.0 - 0.5, monthday / 30.0 - 0.5, yearday / 365.0 - 0.5],
                   axis=-1)
    return out.astype(np.float32)


def instance_norm(x: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z-normalise along ``axis``; returns (z, mean, std) with kept dims (population std, as RevIN)."""
    mean = x.mean(axis=axis, keepdims=True)
    std = np.sqrt(x.var(axis=axis, keepdims=True) + EPS)
    return (x - mean) / std, mean, std


def unit_keys(windows: np.ndarray) -> np.ndarray:
    """``[N, L, C]`` input windows -> ``[C, N, L]`` unit-length instance-normalised keys."""
    z, _, _ = instance_norm(np.asarray(windows, dtype=np.float32).transpose(2, 0, 1), axis=-1)
    norm = np.linalg.norm(z, axis=-1, keepdims=True)
    return (z / np.maximum(norm, EPS)).astype(np.float32)


def normalised_targets(windows: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``[N, H, C]`` targets -> ``[C, N, H]`` normalised by their input window's mean/std."""
    x = np.asarray(windows, dtype=np.float32).transpose(2, 0, 1)
    _, mean, std = instance_norm(x, axis=-1)
    return ((np.asarray(targets, dtype=np.float32).transpose(2, 0, 1) - mean) / std).astype(np.float32)


def span_offsets(seq_len: int, pred_len: int) -> np.ndarray:
    """Step offsets of the L input steps and H horizon steps relative to the origin: ``-(L-1) .. H``."""
    return np.arange(-(seq_len - 1), pred_len + 1, dtype=np.int64)
