"""Forecasting data: CSV series, the standard split and scaling, sliding windows.

* :func:`load_csv` reads any CSV in the ETT layout (a ``date`` column, then
  one column per channel; ``ds``/``y`` as in statsmodels works too).
* :func:`prepare` applies the long-horizon protocol of the literature
  (Time-Series-Library): for ETTh*-shaped data (``split="ett_hour"``) the
  12/4/4-month borders (train rows 0..8639, val 8640-L..11519, test
  11520-L..14399); otherwise 70/10/20 % by time with the same look-back
  overlap (``split="ratio"``); a StandardScaler fitted on the train rows only.
* :class:`WindowSet` holds every (input, target) window of one split with its
  calendar covariates (:func:`forecasting.contract.time_features`).
* :func:`load_victoria` is the hourly Victoria electricity demand that ships
  inside statsmodels (3,600 rows, 2012); :func:`generated_series` makes small
  seasonal multivariate series for tests.

ETTh1 itself lives in ``../shared/data/ETTh1.csv`` beside the checkout; it is
never copied into the repository.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from forecasting.contract import time_features

ROOT = Path(__file__).resolve().parents[2]
ETTH1 = ROOT.parent / "shared" / "data" / "ETTh1.csv"
HOUR_MS = 3_600_000

SplitName = Literal["train", "val", "test"]


@dataclass
class Series:
    """A multivariate series: ``values`` [T, C] float32 in original units, ``ts_ms`` [T] int64."""

    name: str
    columns: list[str]
    values: np.ndarray
    ts_ms: np.ndarray

    @property
    def step_ms(self) -> int:
        steps = np.diff(self.ts_ms[: min(len(self.ts_ms), 1000)])
        return int(np.median(steps)) if len(steps) else HOUR_MS


def load_csv(path: str | Path, columns: list[str] | None = None, name: str | None = None) -> Series:
    """A CSV with a time column (``date`` or ``ds``) and numeric channels; ``columns`` picks/orders them."""
    path = Path(path)
    frame = pl.read_csv(path, try_parse_dates=True)
    time_col = next((c for c in ("date", "ds", "timestamp", "time") if c in frame.columns), None)
    if time_col is None:
        raise ValueError(f"{path}: no time column (date, ds, timestamp or time) in {frame.columns}")
    ts = frame[time_col]
    if ts.dtype == pl.Utf8:
        ts = ts.str.to_datetime()
    ts_ms = ts.dt.cast_time_unit("ms").cast(pl.Int64).to_numpy()
    chans = columns or [c for c in frame.columns if c != time_col]
    missing = [c for c in chans if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: columns {missing} not found")
    values = frame.select([pl.col(c).cast(pl.Float32) for c in chans]).to_numpy().astype(np.float32)
    if not np.isfinite(values).all():
        raise ValueError(f"{path}: missing or non-finite values")
    return Series(name or path.stem, list(chans), values, ts_ms.astype(np.int64))


def victoria_path() -> Path:
    import statsmodels

    return Path(statsmodels.__file__).parent / "tsa" / "stl" / "tests" / "results" / "mstl_elec_vic.csv"


def load_victoria() -> Series:
    """Hourly electricity demand of Victoria (AU), 2012-01-01 .. 2012-05-29, one channel ``demand`` (MW)."""
    path = victoria_path()
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: install statsmodels (pip install statsmodels)")
    s = load_csv(path, name="victoria")
    s.columns = ["demand"]
    return s


def generated_series(n: int = 2000, channels: int = 3, seed: int = 0, start_ms: int = 1_577_836_800_000) -> Series:
    """Seasonal series (daily + weekly cycles, a shared slow level, channel-specific phases and noise)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    level = np.cumsum(rng.normal(0, 0.05, n))
    cols = []
    for c in range(channels):
        daily = np.sin(2 * np.pi * (t / 24.0) + 0.7 * c)
        weekly = 0.5 * np.sin(2 * np.pi * t / 168.0 + 0.3 * c)
        cols.append(10 + 2 * c + (1 + 0.3 * c) * daily + weekly + level + rng.normal(0, 0.2, n))
    values = np.stack(cols, axis=1).astype(np.float32)
    return Series(f"generated{channels}", [f"ch{c}" for c in range(channels)], values,
                  start_ms + t.astype(np.int64) * HOUR_MS)


@dataclass
class StandardScaler:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> "StandardScaler":
        std = values.std(axis=0)
        return cls(values.mean(axis=0).astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32))

    def transform(self, v: np.ndarray) -> np.ndarray:
        return ((v - self.mean) / self.std).astype(np.float32)

    def inverse(self, v: np.ndarray) -> np.ndarray:
        return (v * self.std + self.mean).astype(np.float32)


@dataclass
class WindowSet:
    """All windows of one split: ``x`` [N, L, C], ``y`` [N, H, C], marks [N, L+H, F], ``end`` [N]."""

    x: np.ndarray
    y: np.ndarray
    marks: np.ndarray
    start: np.ndarray
    """Row index of each window's first input step."""
    seq_len: int
    pred_len: int

    def __len__(self) -> int:
        return len(self.x)

    @property
    def target_end(self) -> np.ndarray:
        """Row index of each window's last target step (when its pair matures)."""
        return self.start + self.seq_len + self.pred_len - 1

    @property
    def input_end(self) -> np.ndarray:
        return self.start + self.seq_len - 1


@dataclass
class Prepared:
    series: Series
    scaled: np.ndarray
    marks: np.ndarray
    scaler: StandardScaler
    borders: dict[str, tuple[int, int]]
    """Row range [begin, end) of each split, the look-back overlap included."""
    seq_len: int
    pred_len: int
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def n_channels(self) -> int:
        return self.scaled.shape[1]

    def windows(self, split: SplitName, stride: int = 1) -> WindowSet:
        key = (split, stride)
        if key not in self._cache:
            b, e = self.borders[split]
            L, H = self.seq_len, self.pred_len
            starts = np.arange(b, e - L - H + 1, stride)
            if len(starts) == 0:
                raise ValueError(f"split {split} has no window of {L}+{H} steps")
            idx_x = starts[:, None] + np.arange(L)[None, :]
            idx_y = starts[:, None] + L + np.arange(H)[None, :]
            idx_m = starts[:, None] + np.arange(L + H)[None, :]
            self._cache[key] = WindowSet(self.scaled[idx_x], self.scaled[idx_y], self.marks[idx_m], starts, L, H)
        return self._cache[key]


def split_borders(n: int, seq_len: int, split: Literal["ett_hour", "ratio"] = "ratio") -> dict[str, tuple[int, int]]:
    if split == "ett_hour":
        month = 30 * 24
        b1 = [0, 12 * month - seq_len, 12 * month + 4 * month - seq_len]
        b2 = [12 * month, 12 * month + 4 * month, 12 * month + 8 * month]
        if n < b2[2]:
            raise ValueError(f"ett_hour split needs {b2[2]} rows, the series has {n}")
    else:
        n_train, n_test = int(n * 0.7), int(n * 0.2)
        n_val = n - n_train - n_test
        b1 = [0, n_train - seq_len, n - n_test - seq_len]
        b2 = [n_train, n_train + n_val, n]
    return {"train": (b1[0], b2[0]), "val": (b1[1], b2[1]), "test": (b1[2], b2[2])}


def prepare(series: Series, seq_len: int = 96, pred_len: int = 96,
            split: Literal["ett_hour", "ratio", "auto"] = "auto") -> Prepared:
    """Split, scale (train rows only) and attach calendar features."""
    if split == "auto":
        split = "ett_hour" if series.name.lower().startswith("etth") else "ratio"
    borders = split_borders(len(series.values), seq_len, split)
    tb, te = borders["train"]
    scaler = StandardScaler.fit(series.values[tb:te])
    return Prepared(series, scaler.transform(series.values), time_features(series.ts_ms), scaler, borders,
                    seq_len, pred_len)


def load_etth1(path: str | Path | None = None) -> Series:
    p = Path(path) if path else ETTH1
    if not p.exists():
        raise FileNotFoundError(f"{p} not found: ETTh1 lives in ../shared/data beside the checkout")
    return load_csv(p, name="ETTh1")


def load_named(name: str) -> Series:
    """``etth1``, ``victoria``, ``generated`` or a CSV path."""
    low = name.lower()
    if low == "etth1":
        return load_etth1()
    if low == "victoria":
        return load_victoria()
    if low.startswith("generated"):
        return generated_series(channels=int(low[len("generated"):] or 3))
    return load_csv(name)
