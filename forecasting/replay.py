"""Replay a real series as a forecast stream: actuals, and base forecasts from the exported backbone.

For the demo, the tests and the benchmarks: walks a CSV series (the hourly
Victoria demand of statsmodels by default) in time order; at every step it
publishes the actual (``ActualV1``) and, every ``stride`` steps once ``L``
values are known, a base forecast (``ForecastV1``) made by the bundle's
``base.onnx`` from the last ``L`` actuals. The forecast is sent *before*
the actual of its first horizon step, as a real forecaster would. No torch:
the backbone runs in onnxruntime.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from forecasting.events import ActualV1, ForecastV1, encode
from recast.settings import Settings


def read_series(name_or_path: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(columns, values [T, C] float32, ts_ms [T]) of ``victoria``, a CSV or a dataset description (.json)."""
    from forecasting.dataset import DatasetSpec, read_csv

    if name_or_path.lower() == "victoria":
        import statsmodels

        path = Path(statsmodels.__file__).parent / "tsa" / "stl" / "tests" / "results" / "mstl_elec_vic.csv"
        _, values, ts_ms = read_csv(DatasetSpec("victoria", str(path)))
        return ["demand"], values, ts_ms
    spec = DatasetSpec.from_json(name_or_path) if name_or_path.endswith(".json") else DatasetSpec.for_csv(name_or_path)
    return read_csv(spec)


def series_name(name_or_path: str) -> str:
    """The series key of replayed events: ``victoria``, a description's ``name`` or a CSV's stem (as training)."""
    from forecasting.dataset import DatasetSpec

    if name_or_path.lower() == "victoria":
        return "victoria"
    return DatasetSpec.from_json(name_or_path).name if name_or_path.endswith(".json") else Path(name_or_path).stem


def forecast_events(bundle, values: np.ndarray, ts_ms: np.ndarray, series: str, start: int = 0,
                    end: int | None = None, stride: int = 1, batch: int = 256) -> Iterator[Any]:
    """Events in send order over rows ``start..end``: a forecast at origin t precedes the actual at t+1."""
    L = bundle.seq_len
    end = len(values) if end is None else min(end, len(values))
    step = int(np.median(np.diff(ts_ms[:100])))
    origins = [t for t in range(max(start, L - 1), end - 1) if (t - start) % stride == 0]
    forecasts: dict[int, ForecastV1] = {}
    for i in range(0, len(origins), batch):
        chunk = origins[i:i + batch]
        windows = np.stack([values[t - L + 1:t + 1] for t in chunk])
        bases = bundle.base_forecast(windows)
        for t, w, b in zip(chunk, windows, bases):
            forecasts[t] = ForecastV1(series=series, ts_ms=int(ts_ms[t]), forecast_id=f"{series}@{int(ts_ms[t])}",
                                      step_ms=step, input=w.tolist(), base=b.tolist(),
                                      model=bundle.meta["backbone"]["name"])
    for t in range(start, end):
        yield ActualV1(series=series, ts_ms=int(ts_ms[t]), values=values[t].tolist())
        if t in forecasts:
            yield forecasts[t]


def replay(settings: Settings, series: str = "victoria", start: int | None = None, limit: int | None = None,
           stride: int = 1, speed: float | None = None, bundle=None) -> dict[str, Any]:
    """Publish actuals + base forecasts of ``series`` (default: from the start of its test split)."""
    from kafka import KafkaProducer

    from forecasting.service import ForecastBundle
    from streaming.topics import producer_config

    f = settings.forecast
    bundle = bundle or ForecastBundle(settings.path(f.bundle_dir), f.threads, load_online_store=False)
    cols, values, ts = read_series(series)
    if len(cols) != bundle.n_channels:
        raise ValueError(f"{series} has {len(cols)} channels, the bundle {bundle.n_channels}")
    if start is None:
        start = len(values) - int(len(values) * 0.2) - bundle.seq_len  # the ratio split's test part
    end = None if limit is None else start + limit
    name = series_name(series)
    producer = KafkaProducer(**producer_config(settings.kafka, linger_ms=5))
    sent = {"actuals": 0, "forecasts": 0}
    t0 = time.monotonic()
    first_ts = None
    try:
        futures = []
        for e in forecast_events(bundle, values, ts, name, start, end, stride):
            if speed:
                first_ts = first_ts or e.ts_ms
                wait = (e.ts_ms - first_ts) / 1000.0 / speed - (time.monotonic() - t0)
                if wait > 0:
                    time.sleep(wait)
            topic = f.forecasts_topic if isinstance(e, ForecastV1) else f.actuals_topic
            futures.append(producer.send(topic, key=e.series.encode(), value=encode(e)))
            sent["forecasts" if isinstance(e, ForecastV1) else "actuals"] += 1
        producer.flush()
        for fut in futures:
            fut.get(timeout=30)
    finally:
        producer.close(timeout=5)
    return {**sent, "series": name, "start_row": start, "seconds": round(time.monotonic() - t0, 2)}
