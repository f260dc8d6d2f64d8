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
store is written to ``<bundle>/store.online.npz`` on shutdown, tagged with
the bundle's version, and loaded from there on the next start of the *same*
bundle (a retrained bundle starts from its own training pairs). Pairs are
keyed by series: a forecast retrieves only its own series' pairs unless
``forecast.shared_store``. A record that cannot be decoded for any reason is
counted (``recast_forecast_invalid_total{reason}``) and skipped, never fatal.
With ``forecast.fallback`` a channel whose rolling revised MSE is above the
base's is served the base forecast (``recast_forecast_channel_fallback``). Pending forecasts of a crashed
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

This module is the Kafka side (poll, publish, commit, topics, entry point); the
pieces it drives live apart and are re-exported here: forecasting/bundle.py
(the ONNX bundle), forecasting/maturity.py (step 1) and
forecasting/revision.py (step 2 and the metrics).
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

from prometheus_client import CollectorRegistry

from forecasting.bundle import ForecastBundle
from forecasting.events import ForecastV1, InvalidForecastEvent, decode, encode
from forecasting.maturity import Matured, MaturityTracker, Pending  # noqa: F401  (re-exported)
from forecasting.revision import ForecastMetrics, RevisionProcessor, Rolling  # noqa: F401  (re-exported)
from recast.settings import Settings

log = logging.getLogger("recast.forecast")


class ForecastService:
    """The consumer-group member: poll both topics, mature, revise, publish, commit."""

    def __init__(self, settings: Settings, bundle: ForecastBundle | None = None,
                 registry: CollectorRegistry | None = None, group: str | None = None) -> None:
        f = settings.forecast
        self.settings = settings
        self.bundle = bundle or ForecastBundle(settings.path(f.bundle_dir), f.threads, f.store_capacity,
                                               shared_store=f.shared_store)
        self.processor = RevisionProcessor(settings, self.bundle, registry)
        self.registry = self.processor.registry
        self.metrics = self.processor.metrics
        self.group = group or f.consumer_group
        self.consumer = None
        self.producer = None
        self.stop_requested = False
        self.max_records = f.batch_max
        """Records per poll: halved when a poll's work nears the group's max_poll_interval (a starved CPU would
        otherwise get the member kicked out, its batch redelivered, and no progress made), regrown when fast."""
        self.totals = {"forecasts": 0, "actuals": 0, "revised": 0, "matured": 0, "invalid": 0, "polls": 0,
                       "commit_failures": 0}

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
            self.bundle.save_online_store()

    def request_stop(self, *_: Any) -> None:
        self.stop_requested = True

    def poll_once(self, timeout_ms: int = 200) -> int:
        f = self.settings.forecast
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=self.max_records)
        started = time.monotonic()
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
                except Exception as exc:  # noqa: BLE001 - no record may stop the service (deep nesting, bytes...)
                    self.metrics.invalid.labels("undecodable").inc()
                    self.totals["invalid"] += 1
                    log.warning("skipped an undecodable record at %s[%d]@%d: %s", tp.topic, tp.partition,
                                r.offset, type(exc).__name__)
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
        committed = True
        try:
            self.consumer.commit()
        except Exception as exc:  # redelivery is harmless: duplicates are ignored by the tracker
            committed = False
            self.totals["commit_failures"] += 1
            log.warning("offset commit failed (%s); next polls take at most %d records", type(exc).__name__,
                        max(1, self.max_records // 2))
        self._adapt_batch(time.monotonic() - started, committed)
        self.totals["forecasts"] += len(forecasts)
        self.totals["actuals"] += len(actuals)
        self.totals["revised"] += len(revised)
        self.totals["matured"] = self.processor.matured_count
        return n

    def _adapt_batch(self, seconds: float, committed: bool) -> None:
        interval_s = self.settings.kafka.max_poll_interval_ms / 1000.0
        if not committed or seconds > 0.5 * interval_s:
            self.max_records = max(1, self.max_records // 2)
        elif seconds < 0.1 * interval_s and self.max_records < self.settings.forecast.batch_max:
            self.max_records = min(self.settings.forecast.batch_max, self.max_records * 2)

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
