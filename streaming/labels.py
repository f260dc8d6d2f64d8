"""Labelled examples: exposures joined with outcomes inside an attribution window (polars).

One row per (request, shown item): ``clicked`` is 1 when a click or purchase
of that item, attributed to that request id by the same user, happened within
``window`` after the exposure; ``purchased`` and ``revenue`` (sum of purchase
prices, in ``currency``) likewise. Outcomes outside the window, for items that
were not shown, or from another user are not attributed. Delivery is
at-least-once, so exposures are deduplicated on (request_id, item) and
outcomes on event_id before the join.

``recast stream labels`` reads both topics from the beginning to their current
end and writes ``labels_dir/labelled_examples.parquet``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import polars as pl

from recast.settings import Settings
from streaming.events import ExposureV1, InvalidEvent, OutcomeV1, decode

EXPOSURE_SCHEMA = {
    "request_id": pl.String, "user": pl.String, "item": pl.String, "position": pl.Int64, "score": pl.Float64,
    "model": pl.String, "model_version": pl.String, "experiment": pl.String, "variant": pl.String,
    "cold_start": pl.Boolean, "exposure_ms": pl.Int64,
}
OUTCOME_SCHEMA = {
    "event_id": pl.String, "request_id": pl.String, "user": pl.String, "item": pl.String, "type": pl.String,
    "price": pl.Float64, "currency": pl.String, "outcome_ms": pl.Int64,
}
LABELS_FILE = "labelled_examples.parquet"


def exposures_frame(exposures: Iterable[ExposureV1]) -> pl.DataFrame:
    rows = [
        {"request_id": e.request_id, "user": e.user, "item": s.item, "position": s.position, "score": s.score,
         "model": e.model, "model_version": e.model_version, "experiment": e.experiment, "variant": e.variant,
         "cold_start": e.cold_start, "exposure_ms": e.ts_ms}
        for e in exposures for s in e.items
    ]
    return pl.DataFrame(rows, schema=EXPOSURE_SCHEMA)


def outcomes_frame(outcomes: Iterable[OutcomeV1]) -> pl.DataFrame:
    rows = [
        {"event_id": o.event_id, "request_id": o.request_id, "user": o.user, "item": o.item, "type": o.type,
         "price": o.price, "currency": o.currency, "outcome_ms": o.ts_ms}
        for o in outcomes
    ]
    return pl.DataFrame(rows, schema=OUTCOME_SCHEMA)


def label_examples(exposures: pl.DataFrame | pl.LazyFrame, outcomes: pl.DataFrame | pl.LazyFrame,
                   window_ms: int) -> pl.DataFrame:
    """The attribution join (see the module docstring); rows keep the exposures' order."""
    if window_ms < 0:
        raise ValueError("the attribution window must be >= 0")
    e = exposures.lazy().unique(subset=["request_id", "item"], keep="first", maintain_order=True)
    o = (outcomes.lazy().unique(subset=["event_id"], keep="first")
         .select("request_id", "item", pl.col("user").alias("outcome_user"), "type", "price", "currency",
                 "outcome_ms"))
    keys = list(EXPOSURE_SCHEMA)
    in_window = (
        (pl.col("outcome_ms") >= pl.col("exposure_ms"))
        & (pl.col("outcome_ms") <= pl.col("exposure_ms") + window_ms)
        & (pl.col("outcome_user") == pl.col("user"))
    ).fill_null(False)
    purchase = in_window & (pl.col("type") == "purchase")
    return (
        e.with_row_index("_row")
        .join(o, on=["request_id", "item"], how="left")
        .with_columns(in_window.alias("_in"), purchase.alias("_buy"))
        .group_by("_row", *keys)
        .agg(
            (pl.col("_in") & pl.col("type").is_in(["click", "purchase"])).any().cast(pl.Int8).alias("clicked"),
            pl.col("_buy").any().cast(pl.Int8).alias("purchased"),
            pl.when(pl.col("_buy")).then(pl.col("price")).otherwise(0.0).sum().alias("revenue"),
            pl.col("currency").filter(pl.col("_buy")).first().alias("currency"),
            pl.col("outcome_ms").filter(pl.col("_in")).min().alias("first_outcome_ms"),
        )
        .sort("_row")
        .drop("_row")
        .with_columns(pl.col("clicked").alias("label"))
        .collect()
    )


def read_topic(settings: Settings, topic: str, kind: str, timeout_s: float = 30.0) -> tuple[list, dict[str, int]]:
    """Every valid event of ``kind`` on ``topic``, beginning to end; ``(events, {"invalid": n, "records": n})``."""
    from streaming.topics import read_topic_values

    events, stats = [], {"invalid": 0, "records": 0}
    for value in read_topic_values(settings, topic, timeout_s):
        stats["records"] += 1
        try:
            events.append(decode(value, expect=kind))
        except InvalidEvent:
            stats["invalid"] += 1
    return events, stats


def build_labels(settings: Settings, window_s: float | None = None, out: Path | None = None) -> dict:
    """``recast stream labels``: both topics -> attribution join -> parquet."""
    window_ms = int((settings.stream.attribution_window_s if window_s is None else window_s) * 1000)
    exposures, es = read_topic(settings, settings.kafka.exposures_topic, "exposure")
    outcomes, os_ = read_topic(settings, settings.kafka.outcomes_topic, "outcome")
    labels = label_examples(exposures_frame(exposures), outcomes_frame(outcomes), window_ms)
    out = Path(out) if out else settings.path(settings.stream.labels_dir) / LABELS_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    labels.write_parquet(out)
    return {
        "exposures": len(exposures), "outcomes": len(outcomes), "invalid_skipped": es["invalid"] + os_["invalid"],
        "examples": labels.height, "positives": int(labels["label"].sum()) if labels.height else 0,
        "window_s": window_ms / 1000, "out": str(out),
    }
