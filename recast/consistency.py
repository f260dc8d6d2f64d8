"""Training-serving consistency: do served requests see the features training would give them?

The gateway logs, for a sample of requests (``loop.consistency_sample``), the
model-ready feature ids it scored with inside the exposure event
(``ExposureV1.features``). This job takes those exposures, asks the
training-set builder (``features.point_in_time.assemble``: the offline store's
static rows, the stream processor's offline parts as of strictly before the
request time) for the same user, item and time, and counts per feature the
shown items whose values differ. A non-zero rate means the model is served
other inputs than it was trained on: a stale online store, a processor that
lags (the online value is older than the offline part), a vocabulary that
moved, or a bucketing that differs. Target: 0.

``recast loop --check-consistency`` writes ``<loop.dir>/consistency.json``
and ``consistency.prom`` (Prometheus text format, for a textfile collector),
and pushes the gauges to ``jobs.pushgateway_url`` when one is set:
``recast_training_serving_mismatch_rate{feature}``,
``recast_training_serving_checked_rows``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import polars as pl

from recast.settings import Settings

MISMATCH_METRIC = "recast_training_serving_mismatch_rate"
ROWS_METRIC = "recast_training_serving_checked_rows"


def logged_rows(exposures: Iterable) -> tuple[pl.DataFrame, list[str]]:
    """One row per (sampled exposure, shown item): ``user``, ``item``, ``ts_ms``, ``logged:<feature>`` columns."""
    rows, names = [], {}
    for e in exposures:
        if e.features is None:
            continue
        for k, shown in enumerate(e.items):
            row = {"request_id": e.request_id, "user": e.user, "item": shown.item, "ts_ms": e.ts_ms}
            for name, value in e.features.user.items():
                row[f"logged:{name}"] = value
                names[name] = None
            for name, values in e.features.items.items():
                row[f"logged:{name}"] = values[k]
                names[name] = None
            rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None), list(names)


def mismatches(logged: pl.DataFrame, built: pl.DataFrame, names: list[str]) -> dict[str, dict[str, Any]]:
    """Per feature: rows compared, rows that differ, their rate and a few examples (pure)."""
    out = {}
    for name in names:
        got, want = logged.get_column(f"logged:{name}").to_list(), built.get_column(name).to_list()
        bad = [k for k, (a, b) in enumerate(zip(got, want)) if a != b]
        out[name] = {"rows": len(got), "mismatches": len(bad), "rate": len(bad) / len(got) if got else 0.0,
                     "examples": [{"user": logged["user"][k], "item": logged["item"][k], "ts_ms": logged["ts_ms"][k],
                                   "served": got[k], "training": want[k]} for k in bad[:3]]}
    return out


def check(settings: Settings, exposures: Iterable) -> dict[str, Any]:
    """Compare the logged features of ``exposures`` with the training-set builder's."""
    from features.feast_repo import stream_offline_dirs
    from features.point_in_time import STREAM_COLUMNS, assemble, read_offline_parts

    logged, names = logged_rows(exposures)
    if not names:
        return {"checked_rows": 0, "features": {}, "note": "no exposure carries logged features: raise "
                                                         "loop.consistency_sample above 0 on the gateway"}
    history = read_offline_parts(*stream_offline_dirs(settings)) if set(names) & set(STREAM_COLUMNS) else None
    built = assemble(logged.select("user", "item", "ts_ms"), settings.path(settings.data.features_dir), names, history)
    per_feature = mismatches(logged, built, names)
    return {"checked_rows": logged.height, "requests": logged.get_column("request_id").n_unique(),
            "features": per_feature, "max_rate": max(v["rate"] for v in per_feature.values())}


def publish(settings: Settings, report: dict[str, Any]) -> dict[str, Any]:
    """Write consistency.json and consistency.prom under loop.dir; push to the Pushgateway when configured."""
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

    registry = CollectorRegistry()
    rate = Gauge(MISMATCH_METRIC, "Share of sampled served rows whose feature differs from the training-set "
                                  "builder's value (target 0)", ["feature"], registry=registry)
    for name, v in report["features"].items():
        rate.labels(name).set(v["rate"])
    Gauge(ROWS_METRIC, "Served rows compared by the last consistency check", registry=registry).set(
        report["checked_rows"])
    out = settings.path(settings.loop.dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "consistency.json").write_text(json.dumps(report, indent=2, default=str))
    write_to_textfile(str(out / "consistency.prom"), registry)
    files = {"json": str(out / "consistency.json"), "prometheus": str(out / "consistency.prom")}
    if settings.jobs.pushgateway_url:
        try:
            push_to_gateway(settings.jobs.pushgateway_url, job="recast_consistency", registry=registry)
            files["pushed"] = settings.jobs.pushgateway_url
        except OSError as exc:  # a monitoring outage must not fail the check
            files["push_error"] = str(exc)
    return files


def run_check(settings: Settings) -> dict[str, Any]:
    """``recast loop --check-consistency``: the exposures topic from its beginning -> report + metrics."""
    from streaming.labels import read_topic

    exposures, stats = read_topic(settings, settings.kafka.exposures_topic, "exposure")
    report = check(settings, exposures)
    report["exposures_read"], report["invalid_skipped"] = len(exposures), stats["invalid"]
    return {**report, "outputs": publish(settings, report)}

