"""Bridge to the Kafka event stream of ``streaming/`` (ExposureV1 / OutcomeV1 on the exposures and outcomes topics).

* ``KafkaEventSink``: an ``EventSink`` that publishes what the simulator (driven mode) served and
  what the simulated users did, as ``streaming.events`` messages keyed by user, so the stream
  processors and the label builder see the same traffic as the analysis;
* ``frames_from_events`` / ``read_stream``: the analysis tables (``abtest.events`` schemas) from
  the events on the topics, so ``analyze`` runs on what the system logged.

``streaming`` is imported lazily: abtest works without it (parquet sinks).
One ExposureV1 carries one (experiment, variant): a request in several experiments (layers) is
published once per experiment, with the same ``request_id``; the label builder de-duplicates on
(request_id, item).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Iterable

import polars as pl

from abtest.config import ExperimentsConfig
from abtest.events import CLICK, EXPOSURE_SCHEMA, OUTCOME_SCHEMA, PURCHASE

ITEMS_COLUMN = "items"
"""Optional list[str] column of an exposure frame: the shown items in rank order (driven mode)."""


def _ms(ts: datetime) -> int:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return int(ts.timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).replace(tzinfo=None)


class KafkaEventSink:
    """Publishes exposures and outcomes on ``settings.kafka.exposures_topic`` / ``outcomes_topic``."""

    def __init__(self, settings: Any, producer: Any = None, currency: str | None = None) -> None:
        import streaming.events  # noqa: F401  (fail early without streaming/)

        self.settings = settings
        self.currency = currency or getattr(getattr(settings, "abtest", None), "currency", "EUR")
        if producer is None:
            from kafka import KafkaProducer

            from streaming.topics import producer_config

            producer = KafkaProducer(**producer_config(settings.kafka))
        self.producer = producer
        self.sent = {"exposures": 0, "outcomes": 0}

    def write_exposures(self, frame: pl.DataFrame) -> None:
        from streaming.events import ExposureV1, ShownItem, encode, key_of

        if ITEMS_COLUMN not in frame.columns:
            raise ValueError("KafkaEventSink needs the shown items (an `items` column): use the driven simulation")
        for r in frame.iter_rows(named=True):
            items = r[ITEMS_COLUMN] or []
            if not items:
                continue
            ev = ExposureV1(
                event_id=uuid.uuid4().hex, ts_ms=_ms(r["ts"]), request_id=r["request_id"], user=r["unit_id"],
                items=[ShownItem(item=i, position=p + 1, score=0.0) for p, i in enumerate(items)],
                model=r["model"] or "default", model_version="sim", experiment=r["experiment"], variant=r["variant"],
            )
            self.producer.send(self.settings.kafka.exposures_topic, key=key_of(ev), value=encode(ev))
            self.sent["exposures"] += 1

    def write_outcomes(self, frame: pl.DataFrame) -> None:
        from streaming.events import OutcomeV1, encode, key_of

        for r in frame.iter_rows(named=True):
            buy = r["event"] == PURCHASE
            ev = OutcomeV1(
                event_id=uuid.uuid4().hex, ts_ms=_ms(r["ts"]), request_id=r["request_id"], user=r["unit_id"], item=r["item_id"],
                type=PURCHASE if buy else CLICK, price=float(r["value"]) if buy else None, currency=self.currency if buy else None,
            )
            self.producer.send(self.settings.kafka.outcomes_topic, key=key_of(ev), value=encode(ev))
            self.sent["outcomes"] += 1

    def close(self) -> None:
        self.producer.flush()


def frames_from_events(exposures: Iterable[Any], outcomes: Iterable[Any], config: ExperimentsConfig | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """ExposureV1 / OutcomeV1 events -> the analysis tables (layer filled in from the config)."""
    layer_of = {e.name: layer.name for layer, e in config.experiments()} if config else {}
    exp_rows = [
        {"request_id": e.request_id, "ts": _dt(e.ts_ms), "unit_id": e.user, "layer": layer_of.get(e.experiment) if e.experiment else None,
         "experiment": e.experiment, "variant": e.variant, "model": e.model, "n_items": len(e.items)}
        for e in exposures
    ]
    out_rows = [
        {"request_id": o.request_id, "ts": _dt(o.ts_ms), "unit_id": o.user, "item_id": o.item, "event": o.type,
         "value": float(o.price) if o.type == PURCHASE and o.price is not None else 0.0}
        for o in outcomes
    ]
    exp = pl.DataFrame(exp_rows, schema=EXPOSURE_SCHEMA)
    # the same request in several experiments arrives as several exposures: keep one per (request, experiment)
    exp = exp.unique(subset=["request_id", "experiment"], keep="first", maintain_order=True)
    out = pl.DataFrame(out_rows, schema=OUTCOME_SCHEMA)
    return exp, out


def read_stream(settings: Any, config: ExperimentsConfig | None = None, timeout_s: float = 60.0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Everything on the exposures and outcomes topics, as analysis tables."""
    from streaming.labels import read_topic

    exposures, _ = read_topic(settings, settings.kafka.exposures_topic, "exposure", timeout_s)
    outcomes, _ = read_topic(settings, settings.kafka.outcomes_topic, "outcome", timeout_s)
    return frames_from_events(exposures, outcomes, config)
