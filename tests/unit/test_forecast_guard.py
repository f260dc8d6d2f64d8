"""The guard and the out-of-sample calibration: decisions per channel x horizon block, written into PIR."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.forecasting.calibration import split_validation
from training.forecasting.guard import decide, horizon_blocks

torch.set_num_threads(1)


def test_guard_keeps_steady_gains_and_drops_losses_and_noise() -> None:
    rng = np.random.default_rng(0)
    n, h, c = 400, 8, 3
    y = rng.normal(size=(n, h, c))
    base = y + rng.normal(0, 1.0, size=(n, h, c))
    revised = base.copy()
    revised[:, :, 0] = y[:, :, 0] + 0.7 * (base[:, :, 0] - y[:, :, 0])  # channel 0: 30 % smaller errors
    revised[:, :, 1] = y[:, :, 1] + 1.3 * (base[:, :, 1] - y[:, :, 1])  # channel 1: worse
    revised[:, :4, 2] = y[:, :4, 2] + 0.7 * (base[:, :4, 2] - y[:, :4, 2])  # channel 2: better early steps only
    d = decide(base, revised, y, blocks=2, n_batches=10, t_min=1.0)
    assert d.blocks == [(0, 4), (4, 8)]
    assert d.keep.tolist() == [[True, True], [False, False], [True, False]]
    mask = d.step_mask(h)
    assert mask.shape == (c, h) and mask[2, :4].all() and not mask[2, 4:].any()
    # a revision identical to the base in a block never wins there (mean difference 0 is not a gain)
    assert not d.keep[2, 1] and d.mean_diff[2, 1] == 0.0
    json = d.to_json()
    assert json["keep"][1] == [False, False] and json["n_windows"] == n


def test_horizon_blocks_cover_the_horizon() -> None:
    assert horizon_blocks(96, 4) == [(0, 24), (24, 48), (48, 72), (72, 96)]
    assert horizon_blocks(3, 4) == [(0, 1), (1, 2), (2, 3)]


def test_validation_split_keeps_check_targets_apart() -> None:
    from training.forecasting.data import generated_series, prepare

    prep = prepare(generated_series(n=1500, channels=2), 48, 12)
    val = prep.windows("val")
    fit, check, gap = split_validation(val)
    assert gap == 12 and len(fit) and len(check) >= 0.2 * len(val) - 1
    assert val.start[check].min() >= val.start[fit].max() + val.pred_len  # no target row of a check window was fitted


@pytest.mark.parametrize("scheme", ["holdout", "insample"])
def test_pipeline_guard_is_in_the_model_and_never_touches_dropped_cells(scheme: str) -> None:
    from training.forecasting.data import generated_series, prepare
    from training.forecasting.pipeline import fit_pipeline
    from training.forecasting.train import FitConfig, pir_arrays, pir_predict, predict

    prep = prepare(generated_series(n=1200, channels=2, seed=1), 48, 12)
    run = fit_pipeline(prep, "dlinear", FitConfig(epochs=1, batch_size=64, lr=1e-3),
                       pir_config={"d_model": 16, "n_heads": 2, "d_ff": 32}, top_ks=(5, 10),
                       pir_fit=FitConfig(epochs=2, batch_size=32, lr=2e-3, lr_halving=False), calibration=scheme,
                       parts=("full", "global_only"))
    assert run.calibration.scheme == scheme
    assert set(run.k_scores) == {"full K=5", "full K=10", "global_only K=5", "global_only K=10"}
    part, k = min(run.k_scores, key=run.k_scores.get).split(" K=")
    assert run.pir.config.top_k == int(k) and run.pir.config.use_local == (part == "full")
    keep = run.pir.keep.numpy()
    assert np.array_equal(keep, run.guard.step_mask(12))
    test = prep.windows("test")
    arr = pir_arrays(test, predict(run.backbone, test), run.store, run.pir.config.top_k)
    revised, _ = pir_predict(run.pir, arr)
    dropped = keep.T[None] == 0  # [1, H, C]
    assert np.array_equal(np.where(dropped, revised, 0), np.where(dropped, arr.base, 0))
    if scheme == "holdout":  # PIR fitted on windows the backbone never trained on
        assert run.calibration.fit.start.min() >= prep.borders["val"][0]
    else:
        assert run.calibration.fit.start.max() < prep.borders["train"][1]


def test_crossfit_forecasts_are_out_of_fold() -> None:
    from training.forecasting.calibration import crossfit_forecasts
    from training.forecasting.data import generated_series, prepare
    from training.forecasting.train import FitConfig

    prep = prepare(generated_series(n=1500, channels=2, seed=2), 48, 12)
    ws, base, origins = crossfit_forecasts(prep, "dlinear", FitConfig(epochs=1, batch_size=64), 3, None)
    assert base.shape == ws.y.shape and len(origins) == 4
    # every predicted window's targets start at or after its fold's origin (the fold model never saw them)
    first_target = ws.start + prep.seq_len
    fold = np.searchsorted(origins, first_target, side="right") - 1
    assert (first_target >= np.asarray(origins)[fold]).all() and (fold >= 0).all()
