"""Forecasting data: CSV series, the standard split and scaling, sliding windows.

* :func:`load_spec` / :func:`load_csv` read a CSV through its declarative
  description (forecasting/dataset.py): ETTh1/h2/m1/m2 keep the borders of
  the literature (Time-Series-Library: 12/4/4 months), anything else is split
  70/10/20 % by time, with the look-back overlap.
* :func:`prepare` splits, fits a StandardScaler on the train rows only and
  attaches the calendar features.
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

from forecasting.contract import time_features
from forecasting.dataset import DatasetSpec, read_csv

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
    spec: DatasetSpec | None = None
    """How it is split (None: 70/10/20 % by time)."""

    @property
    def step_ms(self) -> int:
        steps = np.diff(self.ts_ms[: min(len(self.ts_ms), 1000)])
        return int(np.median(steps)) if len(steps) else HOUR_MS


def load_spec(spec: DatasetSpec) -> Series:
    """The series a :class:`forecasting.dataset.DatasetSpec` describes (its borders travel with it)."""
    cols, values, ts_ms = read_csv(spec)
    return Series(spec.name, cols, values, ts_ms, spec)


def load_csv(path: str | Path, columns: list[str] | None = None, name: str | None = None) -> Series:
    """A CSV with a time column (``date``/``ds``/...) and numeric channels; ETT files keep their borders."""
    spec = DatasetSpec.for_csv(path, name)
    if columns is not None:
        spec.covariates, spec.target = list(columns), None
    return load_spec(spec)


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

    def subset(self, keep: np.ndarray) -> "WindowSet":
        """The windows selected by a boolean mask or index array (same alignment)."""
        return WindowSet(self.x[keep], self.y[keep], self.marks[keep], self.start[keep], self.seq_len, self.pred_len)

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
    """Borders of the ETTh protocol (``ett_hour``) or 70/10/20 % (``ratio``); see forecasting/dataset.py."""
    spec = DatasetSpec.builtin("etth1") if split == "ett_hour" else DatasetSpec("ratio")
    return spec.split_borders(n, seq_len)


def prepare(series: Series, seq_len: int = 96, pred_len: int = 96) -> Prepared:
    """Split (the series' dataset description, else 70/10/20 %), scale (train rows only), calendar features."""
    borders = (series.spec or DatasetSpec(series.name)).split_borders(len(series.values), seq_len)
    tb, te = borders["train"]
    scaler = StandardScaler.fit(series.values[tb:te])
    return Prepared(series, scaler.transform(series.values), time_features(series.ts_ms), scaler, borders,
                    seq_len, pred_len)


def load_etth1(path: str | Path | None = None) -> Series:
    p = Path(path) if path else ETTH1
    if not p.exists():
        raise FileNotFoundError(f"{p} not found: ETTh1 lives in ../shared/data beside the checkout")
    return load_spec(DatasetSpec.builtin("ETTh1", p))


def load_named(name: str) -> Series:
    """``etth1`` (beside the checkout), ``victoria``, ``generatedN``, a CSV path or a dataset description (.json)."""
    low = name.lower()
    if low == "etth1":
        return load_etth1()
    if low.endswith(".json"):
        return load_spec(DatasetSpec.from_json(name))
    if low == "victoria":
        return load_victoria()
    if low.startswith("generated"):
        return generated_series(channels=int(low[len("generated"):] or 3))
    return load_csv(name)
