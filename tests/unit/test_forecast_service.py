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


def _replay(bundle, proc, start: int, end: int, stride: int = 2):
    """Send a real series through the processor in order; returns the revised events by forecast id."""
    from forecasting.replay import forecast_events
    from training.forecasting.data import generated_series

    series = generated_series(channels=2)
    out = {}
    for e in forecast_events(bundle, series.values, series.ts_ms, bundle.series_name, start=start, end=end,
                             stride=stride):
        if isinstance(e, ForecastV1):
            for r in proc.on_forecasts([e]):
                out[r.forecast_id] = (e, r)
        else:
            proc.on_actuals([e])
    return out


def test_service_revision_equals_offline_pir_on_the_same_windows(bundle_dir: Path) -> None:
    """The ONNX service path (scaling, ms store, series key, marks, top-K) reproduces the torch PIR offline."""
    import torch

    from forecasting.service import ForecastBundle
    from training.forecasting.data import generated_series, prepare
    from training.forecasting.pir import PIR, PIRConfig
    from training.forecasting.train import pir_arrays, pir_predict, training_store

    ck = torch.load(bundle_dir / "checkpoint.pt", weights_only=False)
    pir = PIR(PIRConfig(**ck["pir_config"]))
    pir.load_state_dict(ck["pir_state"])
    assert pir.keep.numel() and np.array_equal(pir.keep.numpy(), np.asarray(
        json.loads((bundle_dir / "forecast.json").read_text())["guard"]["keep_steps"]))
    prep = prepare(generated_series(channels=2), L, H)
    test = prep.windows("test").subset(np.arange(0, 200, 7))
    bundle = ForecastBundle(bundle_dir, load_online_store=False)
    raw_x = prep.scaler.inverse(test.x)
    raw_base = bundle.base_forecast(raw_x)
    offline, offline_delta = pir_predict(pir, pir_arrays(test, bundle.scale(raw_base), training_store(prep),
                                                         pir.config.top_k))
    origin = prep.series.ts_ms[test.input_end]
    served, delta = bundle.revise(raw_x, raw_base, origin, np.full(len(test), prep.series.step_ms),
                                  [bundle.series_name] * len(test))
    assert np.allclose(bundle.scale(served), offline, atol=1e-4)
    assert np.allclose(delta, offline_delta, atol=1e-4)


def test_service_never_retrieves_a_pair_matured_after_the_origin(bundle_dir: Path) -> None:
    """Through the processor: pairs mature as the stream goes; a late re-sent forecast must be revised exactly
    as it was when first served (it may not see its own, later-matured pair), and every hit matured by its origin."""
    from forecasting.service import ForecastBundle, RevisionProcessor

    bundle = ForecastBundle(bundle_dir, store_capacity=5000, load_online_store=False)
    proc = RevisionProcessor(settings_for(bundle_dir, fallback=False), bundle, CollectorRegistry())
    first = _replay(bundle, proc, start=1500, end=1650)
    assert proc.matured_count > 20
    early = [e for e, _ in first.values()][:10]
    resent = [e.model_copy(update={"forecast_id": e.forecast_id + "-again"}) for e in early]
    again = proc.on_forecasts(resent)
    for e, r in zip(early, again):
        assert np.allclose(r.revised, first[e.forecast_id][1].revised, atol=1e-5)
    x = bundle.scale(np.asarray([e.input for e in early], dtype=np.float32))
    origins = np.asarray([e.ts_ms for e in early])
    hits = bundle.retrieve(x, origins, [bundle.series_name] * len(early))
    at = bundle.store.matured_at[np.maximum(hits.index, 0)]
    assert (at[hits.mask > 0] <= np.repeat(origins, hits.mask[0].size).reshape(hits.mask.shape)[hits.mask > 0]).all()


def test_store_is_keyed_by_series(bundle_dir: Path) -> None:
    from forecasting.service import ForecastBundle

    bundle = ForecastBundle(bundle_dir, load_online_store=False)
    x = np.zeros((1, L, 2), dtype=np.float32) + np.arange(L, dtype=np.float32)[None, :, None]
    origin = np.array([2 * 10**12])
    assert bundle.retrieve(bundle.scale(x), origin, [bundle.series_name]).mask.sum() > 0
    assert bundle.retrieve(bundle.scale(x), origin, ["another-series"]).mask.sum() == 0  # never its pairs
    shared = ForecastBundle(bundle_dir, load_online_store=False, shared_store=True)
    assert shared.retrieve(shared.scale(x), origin, ["another-series"]).mask.sum() > 0


def test_online_store_is_versioned_with_the_bundle(bundle_dir: Path, tmp_path: Path) -> None:
    import shutil

    from forecasting.service import ForecastBundle

    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    bundle = ForecastBundle(copy, load_online_store=False)
    bundle.store.add(np.ones((1, L, 2)), np.ones((1, H, 2)), 3 * 10**12, series=bundle.series_name)
    bundle.save_online_store()
    assert ForecastBundle(copy).store_source == "store.online.npz"
    meta = json.loads((copy / "forecast.json").read_text())
    meta["version"] = "retrained"
    (copy / "forecast.json").write_text(json.dumps(meta))
    fresh = ForecastBundle(copy)
    assert fresh.store_source == "store.npz" and len(fresh.store) == len(bundle.store) - 1


def test_fallback_serves_the_base_on_channels_where_revision_is_worse(bundle_dir: Path) -> None:
    from forecasting.maturity import Matured, Pending
    from forecasting.service import ForecastBundle, RevisionProcessor

    registry = CollectorRegistry()
    bundle = ForecastBundle(bundle_dir, load_online_store=False)
    proc = RevisionProcessor(settings_for(bundle_dir, fallback_min_matured=5), bundle, registry)
    rng = np.random.default_rng(0)
    matured = []
    for i in range(8):
        target = rng.normal(size=(H, 2)).astype(np.float32)
        base = target + 0.5
        revised = target + np.array([[1.0, 0.1]], dtype=np.float32)  # channel 0 worse, channel 1 better
        matured.append(Matured(Pending(f"f{i}", bundle.series_name, 10**12 + i, 3_600_000, np.zeros((L, 2)), base,
                                       revised, np.zeros(2), target)))
    proc._matured(matured)
    value = registry.get_sample_value
    assert value("recast_forecast_channel_fallback", {"channel": "ch0"}) == 1
    assert value("recast_forecast_channel_fallback", {"channel": "ch1"}) == 0
    assert value("recast_forecast_fallback_switches_total", {"to": "base"}) == 1
    out = _replay(bundle, proc, start=1500, end=1520, stride=5)
    e, r = next(iter(out.values()))
    assert r.base_channels == ["ch0"]
    assert np.array_equal(np.asarray(r.revised)[:, 0], np.asarray(e.base, dtype=np.float32)[:, 0])
    if bundle.meta["guard"]["keep_steps"][1][0]:  # channel 1 is still revised where the guard kept it
        assert not np.allclose(np.asarray(r.revised)[:, 1], np.asarray(e.base)[:, 1])


def test_poll_size_shrinks_when_work_nears_the_poll_interval(bundle_dir: Path) -> None:
    """A starved CPU must not get the member kicked out of its group batch after batch (no progress)."""
    from forecasting.service import ForecastBundle, ForecastService

    s = settings_for(bundle_dir, batch_max=256)
    service = ForecastService(s, ForecastBundle(bundle_dir, load_online_store=False), CollectorRegistry())
    interval = s.kafka.max_poll_interval_ms / 1000.0
    service._adapt_batch(0.6 * interval, committed=True)
    assert service.max_records == 128
    service._adapt_batch(0.01, committed=False)  # a failed commit halves too
    assert service.max_records == 64
    for _ in range(5):
        service._adapt_batch(0.01, committed=True)
    assert service.max_records == 256  # regrown, never above forecast.batch_max


def test_a_global_only_bundle_exports_and_revises_without_the_marks_input(tmp_path: Path) -> None:
    """With the local revision off, the exporter prunes the unused calendar-marks input of pir.onnx:
    the export's parity check and the runtime bundle must feed only the inputs the graph declares."""
    import torch

    from forecasting.bundle import ForecastBundle
    from training.forecasting.export import train_bundle

    torch.set_num_threads(1)
    info = train_bundle("generated2", "dlinear", L, H, epochs=1, pir_epochs=1, out_dir=tmp_path, store_capacity=2000,
                        top_ks=(10,), parts=("global_only",))
    assert info["parity"]["pir_max_abs_diff"] <= 1e-5
    bundle = ForecastBundle(tmp_path)
    assert "marks" not in bundle.pir_inputs
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, L, bundle.n_channels)).astype(np.float32)
    base = bundle.base_forecast(x)
    origin = np.full(3, 1_700_000_000_000, dtype=np.int64)
    revised, delta = bundle.revise(x, np.asarray(base, dtype=np.float32), origin, np.full(3, 3_600_000, dtype=np.int64))
    assert revised.shape == (3, H, bundle.n_channels) and np.isfinite(revised).all() and np.isfinite(delta).all()
