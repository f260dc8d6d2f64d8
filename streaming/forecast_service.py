"""`recast forecast serve`: the streaming PIR revision service (onnxruntime + numpy, no torch).

A consumer-group member reading two topics (``forecast.forecasts_topic`` and
``forecast.actuals_topic``, keyed by series) that, per poll:

1. **matures** pairs: every actual fills the horizon slots of the pending
   forecasts of its series; a forecast whose *whole* horizon has been
   observed becomes an (input window, target) pair in the global retrieval
   store (bounded ring, the oldest pairs leave first), and its base and
   revised errors enter the rolling metrics. Nothing partial ever enters the
   store, so no forecast is revised with values it is meant to predict;
   each query also only sees pairs that matured no later than its own
   origin (``not_after``), whatever the arrival order of the messages;
2. **revises** the new base forecasts in one batch: scale with the bundle's
   scaler, calendar features of input + horizon, top-K retrieval from the
   store (numpy), ``pir.onnx`` (onnxruntime) -> revised forecast and δ;
3. publishes one ``RevisedForecastV1`` per forecast on
   ``forecast.revised_topic`` (revised values, δ per channel, ``warning``
   when a channel's δ exceeds its threshold), then commits the offsets
   (at-least-once: a crash may publish a revision twice).

State (pending forecasts, recent actuals, the store) is in memory; the
store is written to ``<bundle>/store.online.npz`` on shutdown and loaded
from there on the next start when present. Pending forecasts of a crashed
instance are not matured by the next one (their pairs are missing from the
store; nothing wrong enters it).

Metrics (``/metrics`` on ``forecast.metrics_port``):
``recast_forecast_revised_total``, ``recast_forecast_actuals_total``,
``recast_forecast_matured_total``, ``recast_forecast_invalid_total{reason}``,
``recast_forecast_dropped_total{reason}``, ``recast_forecast_warnings_total``,
``recast_forecast_revision_seconds`` (per forecast: the time its batch took),
``recast_forecast_batch_size``, ``recast_forecast_store_pairs``,
``recast_forecast_pending``, ``recast_forecast_rolling_mse{forecast="base|revised"}``,
``recast_forecast_rolling_mse_improvement`` (1 - revised/base),
``recast_forecast_rolling_delta_mae`` (|δ - realised MSE|).
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from recast.settings import Settings
from streaming.forecast_core import RetrievalStore, time_features
from streaming.forecast_events import (
    ActualV1,
    ForecastV1,
    InvalidForecastEvent,
    RevisedForecastV1,
    decode,
    encode,
)

log = logging.getLogger("recast.forecast")

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
ONLINE_STORE = "store.online.npz"


# ---------------------------------------------------------------------------- the model
class ForecastBundle:
    """``forecast.json`` + ``pir.onnx`` (+ ``base.onnx``) + the store, loaded for inference."""

    def __init__(self, path: Path, threads: int = 1, store_capacity: int | None = None,
                 load_online_store: bool = True) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        meta_file = self.path / "forecast.json"
        if not meta_file.exists():
            raise FileNotFoundError(f"{meta_file} missing: run `recast forecast train` (or export) first")
        self.meta: dict[str, Any] = json.loads(meta_file.read_text())
        m = self.meta
        self.columns: list[str] = m["columns"]
        self.seq_len, self.pred_len, self.n_channels = m["seq_len"], m["pred_len"], m["n_channels"]
        self.top_k, self.step_ms = m["top_k"], m["step_ms"]
        self.mean = np.asarray(m["scaler"]["mean"], dtype=np.float32)
        self.std = np.asarray(m["scaler"]["std"], dtype=np.float32)
        self.delta_p90 = np.asarray(m.get("delta_p90", [np.inf] * self.n_channels), dtype=np.float32)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.pir = ort.InferenceSession(str(self.path / "pir.onnx"), opts, providers=["CPUExecutionProvider"])
        base = self.path / "base.onnx"
        self.base = ort.InferenceSession(str(base), opts, providers=["CPUExecutionProvider"]) if base.exists() else None
        online = self.path / ONLINE_STORE
        src = online if (load_online_store and online.exists()) else self.path / "store.npz"
        self.store = RetrievalStore.load(src, store_capacity)
        self.store_source = src.name

    def scale(self, v: np.ndarray) -> np.ndarray:
        return ((v - self.mean) / self.std).astype(np.float32)

    def unscale(self, v: np.ndarray) -> np.ndarray:
        return (v * self.std + self.mean).astype(np.float32)

    def marks(self, origin_ms: np.ndarray, step_ms: np.ndarray) -> np.ndarray:
        """Calendar features of the L input steps and H horizon steps of each forecast: [B, L+H, F]."""
        offsets = np.arange(-(self.seq_len - 1), self.pred_len + 1, dtype=np.int64)
        ts = origin_ms[:, None] + offsets[None, :] * step_ms[:, None]
        return time_features(ts)

    def base_forecast(self, windows: np.ndarray) -> np.ndarray:
        """The exported backbone on raw-unit windows [B, L, C] -> [B, H, C] raw units (replay producer)."""
        if self.base is None:
            raise RuntimeError(f"{self.path} has no base.onnx")
        out = self.base.run(["forecast"], {"x": self.scale(windows)})[0]
        return self.unscale(out)

    def revise(self, inputs: np.ndarray, bases: np.ndarray, origin_ms: np.ndarray,
               step_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw-unit inputs [B, L, C] and base forecasts [B, H, C] -> (revised raw [B, H, C], δ scaled [B, C])."""
        x, b = self.scale(inputs), self.scale(bases)
        r = self.store.query(x, self.top_k, not_after=origin_ms)
        feeds = {"x": x, "base": b, "marks": self.marks(origin_ms, step_ms), "sims": r.sims,
                 "targets": r.targets, "mask": r.mask}
        revised, delta = self.pir.run(["revised", "delta"], feeds)
        return self.unscale(revised), delta


# ---------------------------------------------------------------------------- maturity
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
    """[H, C] scaled."""
    delta: np.ndarray
    target: np.ndarray
    """[H, C] scaled, NaN until observed."""
    seen: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

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
        return ((self.pending.base - self.pending.target) ** 2).mean(axis=0)


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
            self.store.add(p.input[None], p.target[None], p.last_ms)
            out.append(Matured(p))
        return out


# ---------------------------------------------------------------------------- metrics
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
                                 "MSE (scaled units) over the last forecast.rolling_window matured forecasts",
                                 ["forecast"], registry=registry)
        self.improvement = Gauge("recast_forecast_rolling_mse_improvement",
                                 "1 - rolling revised MSE / rolling base MSE", registry=registry)
        self.delta_mae = Gauge("recast_forecast_rolling_delta_mae",
                               "Mean |δ - realised per-channel MSE| over the rolling window", registry=registry)
        for reason in ("empty", "not_json", "schema_violation", "shape", "unknown_kind", "unexpected_kind"):
            self.invalid.labels(reason)
        self.dropped.labels("max_pending")


class Rolling:
    def __init__(self, window: int) -> None:
        self.base: deque[float] = deque(maxlen=window)
        self.revised: deque[float] = deque(maxlen=window)
        self.delta_err: deque[float] = deque(maxlen=window)

    def add(self, m: Matured) -> None:
        self.base.append(m.base_mse)
        self.revised.append(m.revised_mse)
        self.delta_err.append(float(np.mean(np.abs(m.pending.delta - m.realised))))

    def snapshot(self) -> dict[str, float]:
        if not self.base:
            return {"n": 0}
        b, r = float(np.mean(self.base)), float(np.mean(self.revised))
        return {"n": len(self.base), "base_mse": b, "revised_mse": r,
                "improvement": 1.0 - r / b if b > 0 else 0.0, "delta_mae": float(np.mean(self.delta_err))}


# ---------------------------------------------------------------------------- the processor (no Kafka)
class RevisionProcessor:
    """Maturity + revision + metrics over decoded events; the Kafka loop below feeds it."""

    def __init__(self, settings: Settings, bundle: ForecastBundle, registry: CollectorRegistry | None = None) -> None:
        f = settings.forecast
        self.settings = settings
        self.bundle = bundle
        self.registry = registry or CollectorRegistry()
        self.metrics = ForecastMetrics(self.registry)
        self.tracker = MaturityTracker(bundle.store, bundle.n_channels, f.max_pending, f.history_steps)
        self.rolling = Rolling(f.rolling_window)
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
        revised, delta = b.revise(inputs, bases, origin, steps)
        delta_units = delta * (b.std ** 2)[None, :]
        out = []
        matured = []
        pairs = len(b.store)
        elapsed_ms = (time.perf_counter() - started) * 1e3
        for i, e in enumerate(ok):
            flagged = delta[i] > self.threshold
            out.append(RevisedForecastV1.model_construct(  # built from validated values: no second validation
                series=e.series, ts_ms=e.ts_ms, forecast_id=e.forecast_id, step_ms=e.step_ms, base=e.base,
                revised=revised[i].tolist(), delta=delta[i].tolist(), delta_units=delta_units[i].tolist(),
                warning=bool(flagged.any()), warning_channels=[b.columns[c] for c in np.flatnonzero(flagged)],
                store_pairs=pairs, revision_ms=elapsed_ms, model=self.model))
            h = b.pred_len
            matured.extend(self.tracker.add_forecast(Pending(
                e.forecast_id, e.series, e.ts_ms, e.step_ms, b.scale(inputs[i]), b.scale(bases[i]),
                b.scale(revised[i]), delta[i], np.full((h, b.n_channels), np.nan, dtype=np.float32))))
        seconds = time.perf_counter() - started
        for r in out:
            self.metrics.latency.observe(seconds)
            if r.warning:
                self.metrics.warnings.inc()
        self.metrics.batch.observe(len(out))
        self.metrics.revised.inc(len(out))
        self._matured(matured)
        return out

    def _matured(self, matured: list[Matured]) -> None:
        self.matured_count += len(matured)
        for m in matured:
            self.rolling.add(m)
        if matured:
            self.metrics.matured.inc(len(matured))
            snap = self.rolling.snapshot()
            self.metrics.rolling_mse.labels("base").set(snap["base_mse"])
            self.metrics.rolling_mse.labels("revised").set(snap["revised_mse"])
            self.metrics.improvement.set(snap["improvement"])
            self.metrics.delta_mae.set(snap["delta_mae"])
        dropped = self.tracker.dropped
        if dropped:
            self.metrics.dropped.labels("max_pending").inc(dropped)
            self.tracker.dropped = 0
        self.metrics.store_pairs.set(len(self.bundle.store))
        self.metrics.pending.set(len(self.tracker.pending))


# ---------------------------------------------------------------------------- Kafka
class ForecastService:
    """The consumer-group member: poll both topics, mature, revise, publish, commit."""

    def __init__(self, settings: Settings, bundle: ForecastBundle | None = None,
                 registry: CollectorRegistry | None = None, group: str | None = None) -> None:
        f = settings.forecast
        self.settings = settings
        self.bundle = bundle or ForecastBundle(settings.path(f.bundle_dir), f.threads, f.store_capacity)
        self.processor = RevisionProcessor(settings, self.bundle, registry)
        self.registry = self.processor.registry
        self.metrics = self.processor.metrics
        self.group = group or f.consumer_group
        self.consumer = None
        self.producer = None
        self.stop_requested = False
        self.totals = {"forecasts": 0, "actuals": 0, "revised": 0, "matured": 0, "invalid": 0, "polls": 0}

    def start(self) -> "ForecastService":
        from kafka import KafkaConsumer, KafkaProducer

        from streaming.topics import consumer_config, producer_config

        k, f = self.settings.kafka, self.settings.forecast
        self.producer = KafkaProducer(**producer_config(k, linger_ms=1))
        self.consumer = KafkaConsumer(**consumer_config(k, self.group, max_partition_fetch_bytes=8 << 20))
        self.consumer.subscribe([f.forecasts_topic, f.actuals_topic])
        return self

    def close(self, save_store: bool = True) -> None:
        if self.consumer is not None:
            self.consumer.close(autocommit=False)
            self.consumer = None
        if self.producer is not None:
            self.producer.close(timeout=5)
            self.producer = None
        if save_store:
            self.bundle.store.save(self.bundle.path / ONLINE_STORE)

    def request_stop(self, *_: Any) -> None:
        self.stop_requested = True

    def poll_once(self, timeout_ms: int = 200) -> int:
        f = self.settings.forecast
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=f.batch_max)
        self.totals["polls"] += 1
        forecasts, actuals = [], []
        n = 0
        for tp, records in polled.items():
            expect = ("forecast",) if tp.topic == f.forecasts_topic else ("actual",)
            for r in records:
                n += 1
                try:
                    e = decode(r.value, expect)
                except InvalidForecastEvent as exc:
                    self.metrics.invalid.labels(exc.reason).inc()
                    self.totals["invalid"] += 1
                    continue
                (forecasts if isinstance(e, ForecastV1) else actuals).append(e)
        if not n:
            return 0
        # actuals first: pairs they mature may serve this batch (each query only sees pairs matured by its origin)
        self.processor.on_actuals(actuals)
        revised = self.processor.on_forecasts(forecasts)
        futures = [self.producer.send(f.revised_topic, key=r.series.encode(), value=encode(r)) for r in revised]
        if futures:
            self.producer.flush()
            for fut in futures:
                fut.get(timeout=30)
        try:
            self.consumer.commit()
        except Exception as exc:  # redelivery is harmless: duplicates are ignored by the tracker
            log.warning("offset commit failed: %s", exc)
        self.totals["forecasts"] += len(forecasts)
        self.totals["actuals"] += len(actuals)
        self.totals["revised"] += len(revised)
        self.totals["matured"] = self.processor.matured_count
        return n

    def caught_up(self) -> bool:
        from kafka import TopicPartition

        assignment = self.consumer.assignment()
        if not assignment:
            return False
        for tp in assignment:
            hw = self.consumer.highwater(TopicPartition(tp.topic, tp.partition))
            if hw is None or self.consumer.position(tp) < hw:
                return False
        return True

    def run(self, until_caught_up: bool = False, idle_exit_s: float | None = None,
            max_forecasts: int | None = None) -> dict[str, Any]:
        if self.consumer is None:
            self.start()
        last = time.monotonic()
        while not self.stop_requested:
            n = self.poll_once()
            now = time.monotonic()
            if n:
                last = now
            if max_forecasts is not None and self.totals["revised"] >= max_forecasts:
                break
            if until_caught_up and not n and self.caught_up():
                break
            if idle_exit_s is not None and now - last >= idle_exit_s:
                break
        return {**self.totals, "store_pairs": len(self.bundle.store), "pending": len(self.processor.tracker.pending),
                "rolling": self.processor.rolling.snapshot()}


def ensure_forecast_topics(settings: Settings, timeout_s: float = 10.0) -> dict[str, int]:
    """Create the forecast topics when missing (idempotent)."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from streaming.topics import admin

    f = settings.forecast
    wanted = {f.forecasts_topic: f.partitions, f.actuals_topic: f.partitions, f.revised_topic: f.partitions}
    client = admin(settings, timeout_s)
    try:
        existing = set(client.list_topics())
        new = [NewTopic(t, p, settings.kafka.replication_factor) for t, p in wanted.items() if t not in existing]
        if new:
            try:
                client.create_topics(new)
            except TopicAlreadyExistsError:
                pass
        described = client.describe_topics(list(wanted))
        return {d.get("name", d.get("topic")): len(d["partitions"]) for d in described}
    finally:
        client.close()


def serve(settings: Settings, metrics_port: int | None = None, until_caught_up: bool = False,
          idle_exit_s: float | None = None, max_forecasts: int | None = None) -> dict[str, Any]:
    """The ``recast forecast serve`` entry point: SIGTERM/SIGINT stop it after the current poll."""
    f = settings.forecast
    ensure_forecast_topics(settings)
    service = ForecastService(settings)
    port = f.metrics_port if metrics_port is None else metrics_port
    if port:
        from prometheus_client import start_http_server

        start_http_server(port, addr=f.metrics_host, registry=service.registry)
    signal.signal(signal.SIGTERM, service.request_stop)
    signal.signal(signal.SIGINT, service.request_stop)
    log.info("serving %s (%s, store %d pairs from %s)", settings.path(f.bundle_dir), service.processor.model,
             len(service.bundle.store), service.bundle.store_source)
    service.start()
    try:
        return service.run(until_caught_up=until_caught_up, idle_exit_s=idle_exit_s, max_forecasts=max_forecasts)
    finally:
        service.close()
