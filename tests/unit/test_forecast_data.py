"""Forecast data: the standard splits, scaling on train only, window alignment, the real series loaders."""

from __future__ import annotations

import numpy as np
import pytest

from forecasting.contract import time_features
from training.forecasting.data import ETTH1, generated_series, load_etth1, load_victoria, prepare, split_borders


def test_ett_borders_follow_the_protocol() -> None:
    b = split_borders(17420, 96, "ett_hour")
    assert b == {"train": (0, 8640), "val": (8640 - 96, 11520), "test": (11520 - 96, 14400)}


def test_windows_align_and_scaler_uses_train_only() -> None:
    s = generated_series(n=600, channels=2)
    prep = prepare(s, seq_len=48, pred_len=12)
    tb, te = prep.borders["train"]
    assert np.allclose(prep.scaled[tb:te].mean(axis=0), 0, atol=1e-4)
    assert not np.allclose(prep.scaled.mean(axis=0), 0, atol=1e-3)  # val/test were not used to fit it
    ws = prep.windows("val")
    i = 5
    start = ws.start[i]
    assert np.array_equal(ws.x[i], prep.scaled[start:start + 48])
    assert np.array_equal(ws.y[i], prep.scaled[start + 48:start + 60])
    assert ws.target_end[i] == start + 59 and ws.marks.shape[1:] == (60, 4)


def test_time_features_match_calendar() -> None:
    # 2016-07-01 00:00 (a Friday, day 183 of a leap year) and 2017-01-02 13:00 (a Monday)
    ts = np.array([1467331200000, 1483362000000])
    f = time_features(ts)
    assert np.allclose(f[0], [-0.5, 4 / 6 - 0.5, -0.5, 182 / 365 - 0.5])
    assert np.allclose(f[1], [13 / 23 - 0.5, -0.5, 1 / 30 - 0.5, 1 / 365 - 0.5])


def test_victoria_demand_loads() -> None:
    s = load_victoria()
    assert s.values.shape == (3600, 1) and s.columns == ["demand"] and s.step_ms == 3_600_000
    prep = prepare(s, 96, 24)
    assert len(prep.windows("test")) == 720 + 96 - 96 - 24 + 1


@pytest.mark.skipif(not ETTH1.exists(), reason="../shared/data/ETTh1.csv not beside the checkout")
def test_etth1_standard_windows() -> None:
    prep = prepare(load_etth1(), 96, 96)
    assert prep.series.columns == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    assert len(prep.windows("train")) == 8449 and len(prep.windows("test")) == 2785


def test_dataset_descriptions_built_in_and_declared(tmp_path) -> None:
    from forecasting.dataset import DatasetSpec
    from training.forecasting.data import load_named

    assert DatasetSpec.builtin("ETTm2").split_borders(69680, 96) == {
        "train": (0, 34560), "val": (34560 - 96, 46080), "test": (46080 - 96, 57600)}
    assert DatasetSpec.for_csv("/x/ETTh2.csv").borders == (8640, 11520, 14400)
    assert DatasetSpec.for_csv("/x/other.csv").borders is None
    s = generated_series(n=300, channels=3)
    rows = ["date,a,b,load"] + [f"2020-01-{1 + i // 24:02d} {i % 24:02d}:00:00,{v[0]},{v[1]},{v[2]}"
                                for i, v in enumerate(s.values[:240])]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    desc = tmp_path / "d.json"
    desc.write_text('{"name": "mine", "path": "d.csv", "target": "load", "covariates": ["b"], '
                    '"fractions": [0.5, 0.25, 0.25]}')
    series = load_named(str(desc))
    assert series.name == "mine" and series.columns == ["b", "load"] and series.values.shape == (240, 2)
    prep = prepare(series, 24, 12)
    assert prep.borders == {"train": (0, 120), "val": (96, 180), "test": (156, 240)}
    desc.write_text('{"name": "bad", "path": "d.csv", "covariates": ["nope"]}')
    with pytest.raises(ValueError, match="nope"):
        load_named(str(desc))
