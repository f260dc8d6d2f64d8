"""Declarative dataset descriptions: a CSV plus what its columns are and how it is split.

A dataset is a CSV with a time column and numeric columns, described by a
:class:`DatasetSpec` (a small JSON file, or one of the built-ins):

```json
{"name": "my_load", "path": "my_load.csv", "time_column": "date", "target": "OT",
 "covariates": ["HUFL", "HULL"], "freq": "h", "fractions": [0.7, 0.1, 0.2]}
```

* every listed variate (``covariates`` then ``target``) is a channel of the
  multivariate forecast, so each variate's forecast is a covariate of PIR's
  local revision; ``covariates: null`` takes every other numeric column;
* ``borders`` (row ends of train / val / test, before the look-back overlap)
  or ``fractions`` (of the rows, by time) split it.

Built in by name (``--data ETTm1.csv`` or ``--dataset ettm1``): ETTh1/ETTh2
(hourly: 12/4/4 months of 30 days, i.e. borders 8640/11520/14400 rows) and
ETTm1/ETTm2 (15-minute: the same months x 4) -- the borders of the
literature (Time-Series-Library). Anything else takes fractions (70/10/20 %).
Polars + numpy only: the runtime's replay and the training side both load
series through here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

_MONTH_H = 30 * 24
ETT_BORDERS = {
    "etth1": (12 * _MONTH_H, 16 * _MONTH_H, 20 * _MONTH_H),
    "etth2": (12 * _MONTH_H, 16 * _MONTH_H, 20 * _MONTH_H),
    "ettm1": (12 * _MONTH_H * 4, 16 * _MONTH_H * 4, 20 * _MONTH_H * 4),
    "ettm2": (12 * _MONTH_H * 4, 16 * _MONTH_H * 4, 20 * _MONTH_H * 4),
}
TIME_COLUMNS = ("date", "ds", "timestamp", "time")


@dataclass
class DatasetSpec:
    name: str
    path: str | None = None
    time_column: str | None = None
    """None: the first of date, ds, timestamp, time present."""
    target: str | None = None
    covariates: list[str] | None = None
    freq: str | None = None
    """Informational (h, 15min, ...): the step is read from the timestamps."""
    borders: tuple[int, int, int] | None = None
    """Row ends of train, val and test (starts: 0, then the previous end minus the look-back)."""
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    extra: dict = field(default_factory=dict)

    @classmethod
    def builtin(cls, name: str, path: str | Path | None = None) -> "DatasetSpec":
        """The ETT borders by name (ETTh1, ETTh2, ETTm1, ETTm2; case-insensitive)."""
        key = name.lower()
        if key not in ETT_BORDERS:
            raise ValueError(f"no built-in dataset {name!r} (built in: {', '.join(sorted(ETT_BORDERS))})")
        return cls(name={"etth1": "ETTh1", "etth2": "ETTh2", "ettm1": "ETTm1", "ettm2": "ETTm2"}[key],
                   path=str(path) if path else None, time_column="date", target="OT",
                   freq="h" if key.startswith("etth") else "15min", borders=ETT_BORDERS[key])

    @classmethod
    def from_json(cls, path: str | Path) -> "DatasetSpec":
        path = Path(path)
        raw = json.loads(path.read_text())
        if "name" not in raw or "path" not in raw:
            raise ValueError(f"{path}: a dataset description needs at least 'name' and 'path'")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        spec = cls(**{k: v for k, v in raw.items() if k in known},
                   extra={k: v for k, v in raw.items() if k not in known})
        if spec.path and not Path(spec.path).is_absolute():
            spec.path = str(path.parent / spec.path)
        return spec

    @classmethod
    def for_csv(cls, path: str | Path, name: str | None = None) -> "DatasetSpec":
        """A CSV: an ETT file by its stem (its borders), anything else by fractions."""
        stem = name or Path(path).stem
        if stem.lower() in ETT_BORDERS:
            return cls.builtin(stem, path)
        return cls(name=stem, path=str(path))

    def to_dict(self) -> dict:
        return asdict(self)

    def split_borders(self, n_rows: int, seq_len: int) -> dict[str, tuple[int, int]]:
        """Row range [begin, end) of each split, the look-back overlap included."""
        if self.borders is not None:
            e1, e2, e3 = self.borders
            if n_rows < e3:
                raise ValueError(f"{self.name}: borders need {e3} rows, the series has {n_rows}")
        else:
            f_train, _, f_test = self.fractions
            n_train, n_test = int(n_rows * f_train), int(n_rows * f_test)
            e1, e2, e3 = n_train, n_rows - n_test, n_rows
        return {"train": (0, e1), "val": (e1 - seq_len, e2), "test": (e2 - seq_len, e3)}


def read_csv(spec: DatasetSpec) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(columns, values [T, C] float32, ts_ms [T] int64) of the described CSV; clear errors on bad files."""
    import polars as pl

    if not spec.path:
        raise ValueError(f"dataset {spec.name!r} has no path")
    path = Path(spec.path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (dataset {spec.name})")
    frame = pl.read_csv(path, try_parse_dates=True)
    time_col = spec.time_column or next((c for c in TIME_COLUMNS if c in frame.columns), None)
    if time_col is None or time_col not in frame.columns:
        raise ValueError(f"{path}: no time column ({spec.time_column or ', '.join(TIME_COLUMNS)}) in {frame.columns}")
    ts = frame[time_col]
    if ts.dtype == pl.Utf8:
        ts = ts.str.to_datetime()
    ts_ms = ts.dt.cast_time_unit("ms").cast(pl.Int64).to_numpy().astype(np.int64)
    if spec.covariates is not None:
        cols = list(spec.covariates) + ([spec.target] if spec.target and spec.target not in spec.covariates else [])
    else:
        cols = [c for c in frame.columns if c != time_col and c != spec.target] + ([spec.target] if spec.target else [])
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: columns {missing} not found")
    values = frame.select([pl.col(c).cast(pl.Float32) for c in cols]).to_numpy().astype(np.float32)
    if not np.isfinite(values).all():
        raise ValueError(f"{path}: missing or non-finite values")
    return cols, values, ts_ms
