"""Maturity of forecasts: a (window, target) pair enters the store only once its whole horizon is observed.

Pure bookkeeping over numpy arrays (no Kafka, no ONNX), so a forecast is never
revised with values it is meant to predict; see forecasting/service.py.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from forecasting.store import RetrievalStore


@dataclass
class Pending:
    forecast_id: str
    series: str
    origin_ms: int
    step_ms: int
    input: np.ndarray
    """[L, C] scaled."""
    base: np.ndarray
    """[H, C] scaled."""
    revised: np.ndarray
    """[H, C] scaled: PIR's revision (tracked even where a channel is served the base forecast)."""
    delta: np.ndarray
    target: np.ndarray
    """[H, C] scaled, NaN until observed."""
    seen: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    served: np.ndarray | None = None
    """[H, C] scaled: what was published (the revision, or the base on channels switched back); None: revised."""

    def slot(self, ts_ms: int) -> int | None:
        off = ts_ms - self.origin_ms
        if off <= 0 or off % self.step_ms:
            return None
        j = off // self.step_ms - 1
        return int(j) if j < len(self.target) else None

    @property
    def last_ms(self) -> int:
        return self.origin_ms + len(self.target) * self.step_ms


@dataclass
class Matured:
    pending: Pending

    @property
    def base_mse(self) -> float:
        return float(np.mean((self.pending.base - self.pending.target) ** 2))

    @property
    def revised_mse(self) -> float:
        return float(np.mean((self.pending.revised - self.pending.target) ** 2))

    @property
    def realised(self) -> np.ndarray:
        """[C] per-channel MSE of the base forecast (what δ estimates)."""
        return ((self.pending.base - self.pending.target) ** 2).mean(axis=0)

    @property
    def revised_by_channel(self) -> np.ndarray:
        return ((self.pending.revised - self.pending.target) ** 2).mean(axis=0)

    @property
    def served_mse(self) -> float:
        p = self.pending
        return float(np.mean(((p.revised if p.served is None else p.served) - p.target) ** 2))


class MaturityTracker:
    """Pending forecasts + recent actuals per series; a pair matures only when every horizon step is observed."""

    def __init__(self, store: RetrievalStore, n_channels: int, max_pending: int = 10000,
                 history_steps: int = 2000) -> None:
        self.store = store
        self.n_channels = n_channels
        self.max_pending = max_pending
        self.history_steps = history_steps
        self.pending: OrderedDict[tuple[str, str], Pending] = OrderedDict()
        self.by_series: dict[str, set[tuple[str, str]]] = {}
        self.history: dict[str, OrderedDict[int, np.ndarray]] = {}
        self.done: OrderedDict[tuple[str, str], None] = OrderedDict()
        """Recently matured forecasts (a redelivered forecast must not add its pair twice)."""
        self.dropped = 0

    def add_forecast(self, p: Pending) -> list[Matured]:
        key = (p.series, p.forecast_id)
        if key in self.pending or key in self.done:  # a redelivery: keep the first
            return []
        p.seen = np.zeros(len(p.target), dtype=bool)
        hist = self.history.get(p.series)
        if hist:
            for j in range(len(p.target)):
                v = hist.get(p.origin_ms + (j + 1) * p.step_ms)
                if v is not None:
                    p.target[j] = v
                    p.seen[j] = True
        self.pending[key] = p
        self.by_series.setdefault(p.series, set()).add(key)
        while len(self.pending) > self.max_pending:
            old_key, _ = self.pending.popitem(last=False)
            self.by_series[old_key[0]].discard(old_key)
            self.dropped += 1
        return self._mature([key]) if p.seen.all() else []

    def add_actual(self, series: str, ts_ms: int, values: np.ndarray) -> list[Matured]:
        hist = self.history.setdefault(series, OrderedDict())
        hist[ts_ms] = values
        while len(hist) > self.history_steps:
            hist.popitem(last=False)
        done = []
        for key in list(self.by_series.get(series, ())):
            p = self.pending[key]
            j = p.slot(ts_ms)
            if j is None:
                continue
            p.target[j] = values
            p.seen[j] = True
            if p.seen.all():
                done.append(key)
        return self._mature(done)

    def _mature(self, keys: Iterable[tuple[str, str]]) -> list[Matured]:
        out = []
        for key in keys:
            p = self.pending.pop(key)
            self.by_series[key[0]].discard(key)
            self.done[key] = None
            while len(self.done) > self.max_pending:
                self.done.popitem(last=False)
            self.store.add(p.input[None], p.target[None], p.last_ms, series=p.series)
            out.append(Matured(p))
        return out
