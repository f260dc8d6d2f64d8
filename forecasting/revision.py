"""Revision of decoded forecasts: validation, maturity, batched ONNX revision, metrics (no Kafka).

The consumer loop in forecasting/service.py feeds it; kept free of Kafka so
tests and benchmarks can drive it with plain events.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from forecasting.bundle import ForecastBundle
from forecasting.events import ActualV1, ForecastV1, RevisedForecastV1
from forecasting.maturity import Matured, MaturityTracker, Pending
from recast.settings import Settings

log = logging.getLogger("recast.forecast")

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ForecastMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.revised = Counter("recast_forecast_revised_total", "Forecasts revised and published", registry=registry)
        self.actuals = Counter("recast_forecast_actuals_total", "Actuals consumed", registry=registry)
        self.matured = Counter("recast_forecast_matured_total",
                               "Forecasts whose whole horizon was observed (pairs added to the store)",
                               registry=registry)
        self.invalid = Counter("recast_forecast_invalid_total", "Messages rejected", ["reason"], registry=registry)
        self.dropped = Counter("recast_forecast_dropped_total", "Pending forecasts dropped before maturing",
                               ["reason"], registry=registry)
        self.warnings = Counter("recast_forecast_warnings_total", "Revised forecasts flagged by δ", registry=registry)
        self.latency = Histogram("recast_forecast_revision_seconds",
                                 "Revision latency of a forecast (its batch: retrieval + ONNX + encode)",
                                 buckets=_LATENCY_BUCKETS, registry=registry)
        self.batch = Histogram("recast_forecast_batch_size", "Forecasts revised per batch", buckets=_BATCH_BUCKETS,
                               registry=registry)
        self.store_pairs = Gauge("recast_forecast_store_pairs", "Pairs in the global retrieval store",
                                 registry=registry)
        self.pending = Gauge("recast_forecast_pending", "Forecasts waiting for their horizon", registry=registry)
        self.rolling_mse = Gauge("recast_forecast_rolling_mse",
                                 ("MSE (scaled units) over the last forecast.rolling_window matured forecasts: "
                                  "base, revised (PIR), served"),
                                 ["forecast"], registry=registry)
        self.improvement = Gauge("recast_forecast_rolling_mse_improvement",
                                 "1 - rolling revised MSE / rolling base MSE", registry=registry)
        self.channel_mse = Gauge("recast_forecast_rolling_mse_channel",
                                 "Rolling MSE (scaled units) per channel of the base forecast and of PIR's revision",
                                 ["channel", "forecast"], registry=registry)
        self.fallback = Gauge("recast_forecast_channel_fallback",
                              "1 while the channel is served the base forecast (its rolling revised MSE is worse)",
                              ["channel"], registry=registry)
        self.fallback_switches = Counter("recast_forecast_fallback_switches_total",
                                         "Channels switched to or back from the base forecast", ["to"],
                                         registry=registry)
        self.delta_mae = Gauge("recast_forecast_rolling_delta_mae",
                               "Mean |δ - realised per-channel MSE| over the rolling window", registry=registry)
        for reason in ("empty", "not_json", "schema_violation", "shape", "unknown_kind", "unexpected_kind",
                       "undecodable"):
            self.invalid.labels(reason)
        self.dropped.labels("max_pending")


class Rolling:
    """Rolling base / PIR-revised / served MSE over the last ``window`` matured forecasts, overall and per channel."""

    def __init__(self, window: int) -> None:
        self.base: deque[np.ndarray] = deque(maxlen=window)
        self.revised: deque[np.ndarray] = deque(maxlen=window)
        self.served: deque[float] = deque(maxlen=window)
        self.delta_err: deque[float] = deque(maxlen=window)

    def add(self, m: Matured) -> None:
        self.base.append(m.realised)
        self.revised.append(m.revised_by_channel)
        self.served.append(m.served_mse)
        self.delta_err.append(float(np.mean(np.abs(m.pending.delta - m.realised))))

    def by_channel(self) -> tuple[np.ndarray, np.ndarray]:
        """Rolling (base, revised) MSE per channel [C]."""
        return np.mean(self.base, axis=0), np.mean(self.revised, axis=0)

    def snapshot(self) -> dict[str, Any]:
        if not self.base:
            return {"n": 0}
        bc, rc = self.by_channel()
        b, r = float(bc.mean()), float(rc.mean())
        return {"n": len(self.base), "base_mse": b, "revised_mse": r, "served_mse": float(np.mean(self.served)),
                "improvement": 1.0 - r / b if b > 0 else 0.0, "delta_mae": float(np.mean(self.delta_err)),
                "base_mse_by_channel": bc.tolist(), "revised_mse_by_channel": rc.tolist()}


# ---------------------------------------------------------------------------- the processor (no Kafka)
class RevisionProcessor:
    """Maturity + revision + metrics over decoded events; the Kafka loop (forecasting/service.py) feeds it."""

    def __init__(self, settings: Settings, bundle: ForecastBundle, registry: CollectorRegistry | None = None) -> None:
        f = settings.forecast
        self.settings = settings
        self.bundle = bundle
        self.registry = registry or CollectorRegistry()
        self.metrics = ForecastMetrics(self.registry)
        self.tracker = MaturityTracker(bundle.store, bundle.n_channels, f.max_pending, f.history_steps)
        self.rolling = Rolling(f.rolling_window)
        self.fallback = np.zeros(bundle.n_channels, dtype=bool)
        """Channels served the base forecast (forecast.fallback: their rolling revised MSE is above the base's)."""
        for c in bundle.columns:
            self.metrics.fallback.labels(c).set(0)
        thr = f.warning_delta
        self.threshold = (np.full(bundle.n_channels, thr, dtype=np.float32) if thr is not None else bundle.delta_p90)
        self.model = f"{bundle.meta['backbone']['name']}+pir"
        self.matured_count = 0
        self.metrics.store_pairs.set(len(bundle.store))

    def check_forecast(self, e: ForecastV1) -> str | None:
        b = self.bundle
        if len(e.input) != b.seq_len or len(e.base) != b.pred_len or len(e.input[0]) != b.n_channels:
            return (f"expected input [{b.seq_len}][{b.n_channels}] and base [{b.pred_len}][{b.n_channels}], "
                    f"got [{len(e.input)}][{len(e.input[0])}] and [{len(e.base)}][{len(e.base[0])}]")
        return None

    def on_actuals(self, actuals: list[ActualV1]) -> list[Matured]:
        out = []
        for a in actuals:
            if len(a.values) != self.bundle.n_channels:
                self.metrics.invalid.labels("shape").inc()
                continue
            self.metrics.actuals.inc()
            out.extend(self.tracker.add_actual(a.series, a.ts_ms, self.bundle.scale(np.asarray(a.values, np.float32))))
        self._matured(out)
        return out

    def on_forecasts(self, forecasts: list[ForecastV1]) -> list[RevisedForecastV1]:
        ok = []
        for e in forecasts:
            problem = self.check_forecast(e)
            if problem:
                self.metrics.invalid.labels("shape").inc()
                log.warning("forecast %s of %s rejected: %s", e.forecast_id, e.series, problem)
            else:
                ok.append(e)
        if not ok:
            return []
        b = self.bundle
        started = time.perf_counter()
        inputs = np.asarray([e.input for e in ok], dtype=np.float32)
        bases = np.asarray([e.base for e in ok], dtype=np.float32)
        origin = np.asarray([e.ts_ms for e in ok], dtype=np.int64)
        steps = np.asarray([e.step_ms for e in ok], dtype=np.int64)
        revised, delta = b.revise(inputs, bases, origin, steps, [e.series for e in ok])
        served = np.where(self.fallback[None, None, :], bases, revised)
        delta_units = delta * (b.std ** 2)[None, :]
        out = []
        matured = []
        pairs = len(b.store)
        elapsed_ms = (time.perf_counter() - started) * 1e3
        for i, e in enumerate(ok):
            flagged = delta[i] > self.threshold
            out.append(RevisedForecastV1.model_construct(  # built from validated values: no second validation
                series=e.series, ts_ms=e.ts_ms, forecast_id=e.forecast_id, step_ms=e.step_ms, base=e.base,
                revised=served[i].tolist(), delta=delta[i].tolist(), delta_units=delta_units[i].tolist(),
                warning=bool(flagged.any()), warning_channels=[b.columns[c] for c in np.flatnonzero(flagged)],
                base_channels=[b.columns[c] for c in np.flatnonzero(self.fallback)],
                store_pairs=pairs, revision_ms=elapsed_ms, model=self.model))
            h = b.pred_len
            matured.extend(self.tracker.add_forecast(Pending(
                e.forecast_id, e.series, e.ts_ms, e.step_ms, b.scale(inputs[i]), b.scale(bases[i]),
                b.scale(revised[i]), delta[i], np.full((h, b.n_channels), np.nan, dtype=np.float32),
                served=b.scale(served[i]) if self.fallback.any() else None)))
        seconds = time.perf_counter() - started
        for r in out:
            self.metrics.latency.observe(seconds)
            if r.warning:
                self.metrics.warnings.inc()
        self.metrics.batch.observe(len(out))
        self.metrics.revised.inc(len(out))
        self._matured(matured)
        return out

    def _update_fallback(self) -> None:
        """Per channel: serve the base forecast while PIR's rolling MSE is above the base's (forecast.fallback)."""
        base, revised = self.rolling.by_channel()
        for c, name in enumerate(self.bundle.columns):
            self.metrics.channel_mse.labels(name, "base").set(float(base[c]))
            self.metrics.channel_mse.labels(name, "revised").set(float(revised[c]))
        f = self.settings.forecast
        if not f.fallback or len(self.rolling.base) < f.fallback_min_matured:
            return
        worse = revised > base
        for c in np.flatnonzero(worse != self.fallback):
            self.metrics.fallback_switches.labels("base" if worse[c] else "revised").inc()
            log.info("channel %s now served the %s forecast (rolling MSE base %.4g, revised %.4g)",
                     self.bundle.columns[c], "base" if worse[c] else "revised", base[c], revised[c])
        self.fallback = worse
        for c, name in enumerate(self.bundle.columns):
            self.metrics.fallback.labels(name).set(int(worse[c]))

    def _matured(self, matured: list[Matured]) -> None:
        self.matured_count += len(matured)
        for m in matured:
            self.rolling.add(m)
        if matured:
            self.metrics.matured.inc(len(matured))
            snap = self.rolling.snapshot()
            self.metrics.rolling_mse.labels("base").set(snap["base_mse"])
            self.metrics.rolling_mse.labels("revised").set(snap["revised_mse"])
            self.metrics.rolling_mse.labels("served").set(snap["served_mse"])
            self.metrics.improvement.set(snap["improvement"])
            self.metrics.delta_mae.set(snap["delta_mae"])
            self._update_fallback()
        dropped = self.tracker.dropped
        if dropped:
            self.metrics.dropped.labels("max_pending").inc(dropped)
            self.tracker.dropped = 0
        self.metrics.store_pairs.set(len(self.bundle.store))
        self.metrics.pending.set(len(self.tracker.pending))
