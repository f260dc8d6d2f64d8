"""The forecast-revision service end to end: a real Tansu broker, a real series, the real ONNX bundle.

Trains a small DLinear + PIR bundle on statsmodels' hourly Victoria electricity
demand, replays the test part of the series through the broker (actuals and
base forecasts from the exported backbone), runs the service, and checks that
every forecast comes out revised with δ, that the store grows by exactly the
forecasts whose whole horizon was observed (with the observed values), that
/metrics exports the rolling MSEs and the latency, and that `recast forecast
plot` writes PNGs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, start_http_server

from recast.settings import ForecastSettings, KafkaSettings, Settings, TritonSettings
from streaming.harness import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
L, H, STRIDE, ROWS = 96, 24, 6, 240


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    import torch

    from streaming.broker import LocalBroker
    from training.forecasting.export import train_bundle

    torch.set_num_threads(1)
    home = tmp_path_factory.mktemp("forecast_home")
    bundle = home / "bundle"
    info = train_bundle("victoria", "dlinear", L, H, epochs=2, pir_epochs=1, out_dir=bundle, store_capacity=4000)
    settings = Settings(home=home, kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", partitions=2),
                        forecast=ForecastSettings(bundle_dir=bundle, metrics_port=0, partitions=2, pred_len=H,
                                                  plots_dir=Path("plots")),
                        triton=TritonSettings(log_dir=Path("logs")))
    broker = LocalBroker(settings)
    broker.start()
    try:
        yield settings, info
    finally:
        broker.stop()


def test_stream_revises_matures_and_exports_metrics(env) -> None:
    from forecasting.events import decode
    from forecasting.plot import read_topic
    from forecasting.replay import read_series, replay
    from forecasting.service import ForecastService, ensure_forecast_topics

    settings, info = env
    assert ensure_forecast_topics(settings) == {settings.forecast.forecasts_topic: 2,
                                                settings.forecast.actuals_topic: 2,
                                                settings.forecast.revised_topic: 2}
    _, values, ts = read_series("victoria")
    start = len(values) - int(len(values) * 0.2) - L
    poison = publish_poison(settings)
    sent = replay(settings, "victoria", start=start, limit=ROWS, stride=STRIDE)
    origins = [t for t in range(start, start + ROWS - 1) if (t - start) % STRIDE == 0]
    assert sent["forecasts"] == len(origins) and sent["actuals"] == ROWS

    registry = CollectorRegistry()
    port = free_port()
    start_http_server(port, addr="127.0.0.1", registry=registry)
    service = ForecastService(settings, registry=registry)
    initial = len(service.bundle.store)
    assert service.bundle.store_source == "store.npz"
    try:
        totals = service.run(until_caught_up=True)
    finally:
        service.close()

    # every poison record counted and skipped, none stopped the service
    assert totals["invalid"] == len(poison)
    invalid = {s.labels["reason"]: s.value for m in registry.collect() for s in m.samples
               if s.name == "recast_forecast_invalid_total"}
    # the two deeply nested records on each topic: named by the shared decoder, not a crash
    assert sum(invalid.values()) == len(poison) and invalid["too_deep"] == 4, invalid

    # every forecast revised and published
    revised = [decode(v, ("revised_forecast",)) for v in read_topic(settings, settings.forecast.revised_topic)]
    assert sorted(r.ts_ms for r in revised) == sorted(int(ts[t]) for t in origins)
    r = revised[0]
    assert np.asarray(r.revised).shape == (H, 1) and len(r.delta) == 1 and isinstance(r.warning, bool)
    assert np.isfinite(np.asarray([x.revised for x in revised])).all()

    # the store grew by exactly the forecasts whose whole horizon was observed
    last_row = start + ROWS - 1
    matured = [t for t in origins if t + H <= last_row]
    assert totals["matured"] == len(matured) and totals["pending"] == len(origins) - len(matured)
    store = service.bundle.store
    assert len(store) == initial + len(matured)
    newest = (store.next - 1) % store.capacity
    t_last = matured[-1]
    assert store.matured_at[newest] == ts[t_last + H]
    x, y = values[t_last - L + 1:t_last + 1], values[t_last + 1:t_last + H + 1]  # the observed pair, no later value
    mean, std = store_stats(service.bundle, x)
    assert np.allclose(store.targets[0, newest], ((service.bundle.scale(y)[:, 0] - mean) / std), atol=1e-4)
    assert (store.matured_at[:len(store)] <= ts[last_row]).all()

    # rolling metrics on /metrics
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for needle in ('recast_forecast_rolling_mse{forecast="base"}', 'recast_forecast_rolling_mse{forecast="revised"}',
                   "recast_forecast_revision_seconds_bucket", f"recast_forecast_matured_total {float(len(matured))}",
                   f"recast_forecast_store_pairs {float(initial + len(matured))}"):
        assert needle in text, needle
    assert (settings.path(settings.forecast.bundle_dir) / "store.online.npz").exists()

    # the plot command over the same topics
    cfg = settings.home / "recast-forecast.json"
    cfg.write_text(json.dumps(settings.model_dump(mode="json")))
    env_ = {k: v for k, v in os.environ.items() if not k.startswith("RECAST_")}
    env_.update({"RECAST_CONFIG": str(cfg), "OMP_WAIT_POLICY": "PASSIVE",
                 "PYTHONPATH": os.pathsep.join([str(ROOT), env_.get("PYTHONPATH", "")])})
    out = subprocess.run([sys.executable, "-m", "recast.cli", "forecast", "plot", "--n", "3"], env=env_,
                         cwd=str(settings.home), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    plots = json.loads(out.stdout)["plots"]
    assert len(plots) >= 2 and all(Path(p).read_bytes()[:4] == b"\x89PNG" for p in plots)


def publish_poison(settings) -> list[bytes | None]:
    """Records no decoder should survive naively: deep nesting, non-UTF-8, wrong types, tombstones, junk."""
    from kafka import KafkaProducer

    from streaming.topics import producer_config

    records = [b"[" * 200_000 + b"]" * 200_000, b'{"kind": "forecast", "v": 1, "x": ' + b"[" * 50_000 + b"]" * 50_000
               + b"}", b"\xff\xfe\x00garbage", b'{"kind": "forecast", "v": 1, "series": 5, "ts_ms": "soon"}',
               b'"just a string"', None]
    producer = KafkaProducer(**producer_config(settings.kafka, linger_ms=1))
    try:
        for topic in (settings.forecast.forecasts_topic, settings.forecast.actuals_topic):
            for value in records:
                producer.send(topic, key=b"victoria", value=value).get(timeout=30)
    finally:
        producer.close(timeout=5)
    return records * 2


def store_stats(bundle, x: np.ndarray) -> tuple[float, float]:
    z = bundle.scale(x)[:, 0]
    return float(z.mean()), float(np.sqrt(z.var() + 1e-5))
