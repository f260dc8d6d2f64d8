"""Exposure logging from the gateway to Kafka, off the scoring path.

Policy (README "Streaming"):

* **Scoring never waits for Kafka.** ``publish_scored`` only puts a small tuple
  on a bounded in-memory queue (``stream.exposure_queue_size``, default
  10,000) and returns; the event is built, validated (``ExposureV1``) and sent
  by one background thread through a kafka-python producer (acks=all,
  retries; not idempotent, see ``_config``).
* **Kafka slow or down:** the backlog waits in the queue
  (``recast_gateway_exposure_queue``); an exposure that does not fit is
  dropped and counted (``recast_gateway_exposures_dropped_total{reason="queue_full"}``).
  At most ``max_in_flight`` exposures sit inside the producer; those are
  retried until ``stream.exposure_delivery_timeout_ms`` and then counted as
  ``reason="delivery_failed"``. Until the first connection succeeds the
  thread retries with backoff.
* **Broker gauge:** ``recast_gateway_exposure_broker_up`` comes from a probe
  thread that asks the cluster for its metadata every ``probe_interval_s``
  (a TCP check first, so a dead broker costs no client log flood). A producer
  that merely holds a connection, or a delivery that still succeeds from a
  buffer, does not count as "up".
* **Kafka back:** the queue drains in order; delivered exposures count in
  ``recast_gateway_exposures_published_total``.
* **Shutdown:** the queue is flushed for up to ``close(timeout)`` seconds;
  what is left is counted as ``reason="shutdown"``. The buffer is memory only:
  a crashed gateway loses at most the queue.

Delivery is at-least-once (a retried send may duplicate an exposure): the
labelling job deduplicates on (request_id, item).
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
import uuid
from typing import Any, Protocol, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger("recast.exposures")


class ExposureSink(Protocol):
    def publish_scored(self, request_id: str, user_id: str, model: str, model_version: str,
                       items: Sequence[tuple[str, float]], cold_start: bool = False,
                       experiment: str | None = None, variant: str | None = None,
                       features: dict | None = None) -> bool: ...

    def close(self, timeout: float = 5.0) -> None: ...


class ExposureMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.published = Counter("recast_gateway_exposures_published_total",
                                 "Exposure events acknowledged by Kafka", registry=registry)
        self.dropped = Counter("recast_gateway_exposures_dropped_total",
                               "Exposure events given up (queue_full, delivery_failed, invalid, shutdown)",
                               ["reason"], registry=registry)
        self.queued = Gauge("recast_gateway_exposure_queue", "Exposure events waiting in the gateway's buffer",
                            registry=registry)
        self.broker_up = Gauge("recast_gateway_exposure_broker_up",
                               "1 while the exposure producer is connected", registry=registry)
        for reason in ("queue_full", "delivery_failed", "invalid", "shutdown"):
            self.dropped.labels(reason)


class ExposurePublisher:
    """Bounded queue + one background producer thread (see the module docstring)."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        max_queue: int = 10_000,
        registry: CollectorRegistry | None = None,
        delivery_timeout_ms: int = 30_000,
        max_in_flight: int = 1_000,
        producer_overrides: dict[str, Any] | None = None,
        probe_interval_s: float = 2.0,
    ) -> None:
        self.topic = topic
        self.metrics = ExposureMetrics(registry)
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, max_queue))
        self._in_flight = threading.BoundedSemaphore(max(1, max_in_flight))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._probe_thread: threading.Thread | None = None
        self.probe_interval_s = probe_interval_s
        self._producer = None
        self._held: tuple | None = None
        self._config = {
            "bootstrap_servers": bootstrap_servers.split(","),
            "client_id": "recast-gateway-exposures",
            "acks": "all",
            # not idempotent: a broker that restarts (the local one loses its memory) forgets the
            # producer id and an idempotent producer then fails every batch; duplicates are deduped downstream
            "enable_idempotence": False,
            "linger_ms": 10,
            "retries": 2**31 - 1,
            "max_in_flight_requests_per_connection": 5,
            "delivery_timeout_ms": delivery_timeout_ms,
            "request_timeout_ms": min(10_000, max(1_000, delivery_timeout_ms - 1_000)),
            "max_block_ms": 2_000,
            "bootstrap_timeout_ms": 2_000,
            "reconnect_backoff_max_ms": 2_000,
            **(producer_overrides or {}),
        }

    @classmethod
    def from_settings(cls, settings, registry: CollectorRegistry | None = None) -> "ExposurePublisher":
        s = settings.stream
        return cls(settings.kafka.bootstrap_servers, settings.kafka.exposures_topic, s.exposure_queue_size,
                   registry, s.exposure_delivery_timeout_ms)

    # ------------------------------------------------------------------ request path
    def publish_scored(self, request_id: str, user_id: str, model: str, model_version: str,
                       items: Sequence[tuple[str, float]], cold_start: bool = False,
                       experiment: str | None = None, variant: str | None = None,
                       features: dict | None = None) -> bool:
        """Queue one exposure without blocking; False (and counted) when the buffer is full.

        ``features``: the model-ready ids the request was scored with (``LoggedFeatures``), sampled requests only."""
        entry = (request_id, user_id, model, model_version, tuple(items), cold_start, experiment, variant,
                 int(time.time() * 1000), features)
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.metrics.dropped.labels("queue_full").inc()
            return False
        self.metrics.queued.set(self._queue.qsize())
        return True

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "ExposurePublisher":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="exposure-publisher", daemon=True)
            self._thread.start()
            self._probe_thread = threading.Thread(target=self._probe, name="exposure-broker-probe", daemon=True)
            self._probe_thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Drain for up to ``timeout`` s, then stop; what is left is counted as dropped (shutdown)."""
        deadline = time.monotonic() + timeout
        while self._thread is not None and time.monotonic() < deadline:
            if self._queue.empty() and self._held is None:
                break
            if self._producer is None and not self._reachable():  # no broker: nothing can drain
                break
            time.sleep(0.02)  # connected, or connecting to a broker that answers: let the thread drain
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(0.1, deadline - time.monotonic()) + 2.5)
            self._thread = None
        if self._probe_thread is not None:
            self._probe_thread.join(timeout=3.0)
            self._probe_thread = None
        if self._producer is not None:
            try:
                self._producer.flush(timeout=max(0.1, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - counted by the errbacks
                pass
            self._producer.close(timeout=0.5)
            self._producer = None
        left = self._queue.qsize() + (self._held is not None)
        if left:
            self.metrics.dropped.labels("shutdown").inc(left)
        self.metrics.queued.set(0)

    @property
    def pending(self) -> int:
        return self._queue.qsize() + (self._held is not None)

    # ------------------------------------------------------------------ background thread
    def _reachable(self) -> bool:
        """A plain TCP probe first: kafka-python logs every refused bootstrap at ERROR level."""
        for server in self._config["bootstrap_servers"]:
            host, _, port = server.strip().rpartition(":")
            try:
                with socket.create_connection((host.strip("[]"), int(port)), timeout=0.5):
                    return True
            except (OSError, ValueError):
                continue
        return False

    def _probe(self) -> None:
        """Sets the broker gauge from a metadata request every ``probe_interval_s`` (see the module doc)."""
        from kafka import KafkaAdminClient

        admin = None
        while True:
            up = False
            if self._reachable():
                try:
                    if admin is None:
                        admin = KafkaAdminClient(
                            bootstrap_servers=self._config["bootstrap_servers"], client_id="recast-gateway-probe",
                            request_timeout_ms=2_000, bootstrap_timeout_ms=2_000, reconnect_backoff_max_ms=1_000)
                    up = bool(admin.describe_cluster().get("brokers"))
                except Exception as exc:  # noqa: BLE001 - any failure means "not up"; retried next round
                    log.debug("broker probe failed: %s", exc)
                    admin = _close_quietly(admin)
            self.metrics.broker_up.set(1 if up else 0)
            if self._stop.wait(self.probe_interval_s):
                break
        _close_quietly(admin)

    def _connect(self) -> bool:
        from kafka import KafkaProducer

        if not self._reachable():
            self.metrics.broker_up.set(0)
            return False
        try:
            self._producer = KafkaProducer(**self._config)
        except Exception as exc:  # NoBrokersAvailable, KafkaTimeoutError, ...
            log.debug("exposure producer cannot connect yet: %s", exc)
            self._producer = None
            self.metrics.broker_up.set(0)
            return False
        return True

    def _run(self) -> None:
        from kafka.errors import KafkaTimeoutError

        from streaming.events import ExposureV1, LoggedFeatures, ShownItem, encode

        backoff = 0.2
        while not self._stop.is_set():
            if self._producer is None and not self._connect():
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            entry = self._held
            if entry is None:
                try:
                    entry = self._queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                self.metrics.queued.set(self._queue.qsize())
            try:
                request_id, user, model, version, items, cold, experiment, variant, ts, features = entry
                event = ExposureV1(
                    event_id=uuid.uuid4().hex, ts_ms=ts, request_id=request_id, user=user, model=model,
                    model_version=version, cold_start=cold, experiment=experiment, variant=variant,
                    items=[ShownItem(item=i, position=p, score=float(s)) for p, (i, s) in enumerate(items, 1)],
                    features=LoggedFeatures(**features) if features is not None else None,
                )
                value = encode(event)
            except Exception as exc:  # noqa: BLE001 - a bad exposure must not stop the thread
                log.warning("dropping an invalid exposure: %s", exc)
                self.metrics.dropped.labels("invalid").inc()
                self._held = None
                continue
            while not self._in_flight.acquire(timeout=0.1):
                if self._stop.is_set():
                    self._held = entry
                    return
            try:
                future = self._producer.send(self.topic, key=user.encode(), value=value)
            except KafkaTimeoutError:  # no metadata: broker unreachable; keep it and retry
                self._in_flight.release()
                self._held = entry
                self.metrics.broker_up.set(0)
                self._stop.wait(0.2)
                continue
            except Exception as exc:  # noqa: BLE001
                self._in_flight.release()
                log.warning("exposure send failed: %s", exc)
                self.metrics.dropped.labels("delivery_failed").inc()
                self._held = None
                continue
            self._held = None
            future.add_callback(self._delivered)
            future.add_errback(self._failed)

    def _delivered(self, _metadata) -> None:
        self._in_flight.release()
        self.metrics.published.inc()

    def _failed(self, exc) -> None:
        self._in_flight.release()
        log.warning("exposure not delivered: %s", exc)
        self.metrics.dropped.labels("delivery_failed").inc()


def _close_quietly(admin) -> None:
    if admin is not None:
        try:
            admin.close()
        except Exception:  # noqa: BLE001 - a client of a dead broker may fail to close
            pass
