"""The revision processor without Kafka: a real exported bundle, ONNX revision, maturity, metrics, plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from forecasting.events import ActualV1, ForecastV1, InvalidForecastEvent, decode, encode
from recast.settings import ForecastSettings, Settings

L, H = 48, 12


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from training.forecasting.export import train_bundle

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("forecast_bundle")
    info = train_bundle("generated2", "dlinear", L, H, epochs=1, pir_epochs=1, out_dir=out, store_capacity=5000,
                        top_ks=(10,))
    assert info["parity"]["pir_max_abs_diff"] <= 1e-5 and info["parity"]["backbone_max_abs_diff"] <= 1e-5
    return out


def settings_for(bundle: Path, **kw) -> Settings:
    return Settings(home=bundle, forecast=ForecastSettings(bundle_dir=bundle, metrics_port=0, **kw))


def test_bundle_contents(bundle_dir: Path) -> None:
    meta = json.loads((bundle_dir / "forecast.json").read_text())
    assert {"base.onnx", "pir.onnx", "store.npz", "forecast.json", "checkpoint.pt"} <= {p.name for p in bundle_dir.iterdir()}
    assert meta["seq_len"] == L and meta["pred_len"] == H and meta["columns"] == ["ch0", "ch1"]
    assert meta["store"]["pairs"] > 0 and len(meta["delta_p90"]) == 2


def test_events_round_trip_and_reject_bad_shapes() -> None:
    f = ForecastV1(series="s", ts_ms=1_000, forecast_id="a", step_ms=10, input=[[1.0, 2.0]] * 3, base=[[1.0, 2.0]])
    assert decode(encode(f), ("forecast",)) == f
    with pytest.raises(InvalidForecastEvent) as e:
        decode(b'{"kind": "forecast", "v": 1, "series": "s", "ts_ms": 5, "forecast_id": "a", "step_ms": 1, '
               b'"input": [[1.0], [1.0, 2.0]], "base": [[1.0]]}')
    assert e.value.reason == "schema_violation"
    with pytest.raises(InvalidForecastEvent) as e:
        decode(encode(ActualV1(series="s", ts_ms=5, values=[1.0])), ("forecast",))
    assert e.value.reason == "unexpected_kind"


def test_processor_revises_matures_and_exports_metrics(bundle_dir: Path, tmp_path: Path) -> None:
    from forecasting.plot import plot_forecasts
    from forecasting.replay import forecast_events
    from forecasting.service import ForecastBundle, RevisionProcessor
    from training.forecasting.data import generated_series

    s = settings_for(bundle_dir)
    bundle = ForecastBundle(bundle_dir, store_capacity=5000, load_online_store=False)
    start_pairs = len(bundle.store)
    registry = CollectorRegistry()
    proc = RevisionProcessor(s, bundle, registry)
    series = generated_series(channels=2)
    events = list(forecast_events(bundle, series.values, series.ts_ms, bundle.series_name, start=1500, end=1600,
                                  stride=4))
    revised, actuals = [], []
    for e in events:
        if isinstance(e, ForecastV1):
            revised.extend(proc.on_forecasts([e]))
        else:
            actuals.append(e)
            proc.on_actuals([e])
    n_fc = sum(isinstance(e, ForecastV1) for e in events)
    assert len(revised) == n_fc > 0
    r = revised[0]
    assert np.asarray(r.revised).shape == (H, 2) and len(r.delta) == 2 and r.model == "dlinear+pir"
    # forecasts at origins t with t + H <= last actual have matured; later ones wait
    last = max(a.ts_ms for a in actuals)
    expected = sum(1 for e in events if isinstance(e, ForecastV1) and e.ts_ms + H * e.step_ms <= last)
    value = registry.get_sample_value
    assert value("recast_forecast_matured_total") == expected == len(bundle.store) - start_pairs
    assert value("recast_forecast_pending") == n_fc - expected
    assert value("recast_forecast_revised_total") == n_fc
    assert value("recast_forecast_revision_seconds_count") == n_fc
    assert value("recast_forecast_rolling_mse", {"forecast": "base"}) > 0
    assert value("recast_forecast_rolling_mse", {"forecast": "revised"}) > 0
    paths = plot_forecasts(revised, actuals, tmp_path / "plots", n=2, columns=bundle.columns, lookback=L)
    assert paths and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_wrong_shapes_are_counted_not_revised(bundle_dir: Path) -> None:
    from forecasting.service import ForecastBundle, RevisionProcessor

    registry = CollectorRegistry()
    proc = RevisionProcessor(settings_for(bundle_dir), ForecastBundle(bundle_dir, load_online_store=False), registry)
    bad = ForecastV1(series="s", ts_ms=10**12, forecast_id="x", step_ms=3_600_000, input=[[1.0, 2.0]] * 5,
                     base=[[1.0, 2.0]] * H)
    assert proc.on_forecasts([bad]) == []
    assert registry.get_sample_value("recast_forecast_invalid_total", {"reason": "shape"}) == 1
