"""Statistical validation by simulation, through the production path.

abtest/montecarlo.py draws heavy-tailed marketplace users (buy rate 0.1, GMV per buyer log-normal with
log-sd 2), reduces each simulated experiment to per-arm ``Moments`` and runs ``comparison.compare`` on
them, the function the readout runs on logged events. Each check pools several seeds and uses a
binomial tolerance (z = 3.29, two-sided 99.9%), so a correct engine fails about once in a thousand runs
and a wrong one (e.g. the delta-method relative test, ~10-15% false positives here) fails every time.
The full tables (2,000 runs per cell, 10,000 users per arm too) are in benchmarks/abtest_validity.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from abtest import montecarlo as M
from abtest.config import Analysis

ALPHA = 0.05
SEEDS = (11, 12, 13)
SIMS = 250  # per seed: 750 runs per check
N = 1000


def tol(p: float, runs: int, z: float = 3.29) -> float:
    """Half-width of a ~99.9% normal interval of a binomial proportion over ``runs`` runs."""
    return z * np.sqrt(p * (1 - p) / runs)


@pytest.fixture(scope="module")
def aa():
    return [M.run_fixed(seed, SIMS, N, 0.0, winsorize=False) for seed in SEEDS]


@pytest.fixture(scope="module")
def lifted():
    return [M.run_fixed(100 + seed, SIMS, N, 0.05, winsorize=False) for seed in SEEDS]


def pooled(runs, metric, cuped):
    return [c for r in runs for c in r.rows[metric][cuped]]


@pytest.mark.parametrize("cuped", [False, True])
@pytest.mark.parametrize("metric", M.METRICS)
def test_aa_false_positive_rate_of_the_decision(aa, metric, cuped):
    rows = pooled(aa, metric, cuped)
    fpr = float(np.mean(M.rejections(rows, ALPHA)))
    assert fpr <= ALPHA + tol(ALPHA, len(rows)), fpr
    if metric == "ctr":  # light-tailed: the test is also not conservative
        assert fpr >= ALPHA - tol(ALPHA, len(rows)), fpr


def test_the_delta_method_relative_test_would_have_failed_on_the_same_runs(aa):
    """The engine's old decision statistic on the same simulated GMV: far above alpha. The decision
    test must stay below it, or this suite would not detect the failure it guards against."""
    rows = pooled(aa, "gmv_per_user", False)
    z = np.array([abs(c.rel_lift) / c.rel_se for c in rows])
    delta_fpr = float(np.mean(2 * sps.norm.sf(z) < ALPHA))
    assert delta_fpr > ALPHA + tol(ALPHA, len(rows)), delta_fpr
    assert float(np.mean(M.rejections(rows))) < delta_fpr


@pytest.mark.parametrize("cuped", [False, True])
@pytest.mark.parametrize("metric", M.METRICS)
def test_interval_coverage_at_a_true_lift(lifted, metric, cuped):
    rows = pooled(lifted, metric, cuped)
    cover = float(np.mean(M.covered(rows, 0.05)))
    assert cover >= 0.95 - tol(0.95, len(rows)), cover
    assert all(c.rel_ci[0] >= -1.0 for c in rows)  # never below -100%


def test_cuped_reduces_variance_and_intervals_agree_with_the_decision(lifted):
    """CTR: the click propensity carries over from the pre-period, CUPED removes a good share of the
    variance. GMV: heavy-tailed order values barely repeat, the reduction is ~0 but never a loss."""
    ctr = pooled(lifted, "ctr", True)
    assert all(c.cuped for c in ctr) and np.median([c.variance_reduction for c in ctr]) > 0.02
    rows = pooled(lifted, "gmv_per_user", True)
    assert np.median([c.variance_reduction for c in rows]) > -0.01
    for c in rows + ctr:
        if np.isfinite(c.rel_ci[1]):
            assert (c.p_value < ALPHA) == (c.rel_ci[0] > 0 or c.rel_ci[1] < 0)


def test_winsorized_gmv_keeps_its_false_positive_rate():
    rows = [c for seed in SEEDS for c in M.run_fixed(200 + seed, 150, N, 0.0, winsorize=True, metrics=("gmv_per_user",)).rows["gmv_per_user"][True]]
    assert float(np.mean(M.rejections(rows))) <= ALPHA + tol(ALPHA, len(rows))


def test_sequential_peeking_keeps_false_positives_below_alpha():
    """14 daily looks at the always-valid p-value, A/A, 100 users per arm per day."""
    p = np.concatenate([M.run_sequential(300 + seed, 80, per_day=100) for seed in SEEDS])
    assert np.all(np.diff(p, axis=1) <= 0)  # running minimum
    assert float(np.mean(p[:, -1] < ALPHA)) <= ALPHA + tol(ALPHA, len(p))


def test_power_matches_the_calculator_for_ctr(lifted):
    """Power at +5% CTR from the simulated runs against abtest.power at the pilot's per-unit sd."""
    from abtest import stats
    from abtest.config import BUILTIN_METRICS
    from abtest.power import power_at

    m = stats.Moments.from_array(M.COLUMNS, M.draw_units(np.random.default_rng(5), 1, 200_000)[0])
    est = stats.metric_estimate(m, "ratio", BUILTIN_METRICS["ctr"].columns)
    predicted = power_at(est.value, float(np.sqrt(est.variance * m.n)), 0.05, N)
    rows = pooled(lifted, "ctr", False)
    simulated = float(np.mean(M.rejections(rows)))
    assert abs(simulated - predicted) <= tol(predicted, len(rows)), (simulated, predicted)


def test_minimum_sample_rule_holds_back_small_experiments():
    run = M.run_fixed(7, 20, 60, 0.0, winsorize=False, analysis=Analysis(), metrics=("gmv_per_user",))
    assert all(c.status == "not enough data" for c in run.rows["gmv_per_user"][False])
