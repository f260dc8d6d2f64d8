"""One comparison (abtest.comparison.compare): degenerate arms, CUPED fallback, Fieller intervals,
gbstats's CUPED relative lift, the minimum-sample rule, guardrails and verdicts.

gbstats 0.8.0 numbers (scratch venv, see test_abtest_stats.py) for the CUPED relative lift on the
summary statistics PC/PT there:
    a, b = RegressionAdjustedStatistic(PC...), RegressionAdjustedStatistic(PT...); theta = compute_theta(a, b)
    TwoSidedTTest(a, b, FrequentistConfig(difference_type="relative")) -> expected, variance
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from abtest import stats as S
from abtest.aggregate import PRE_COLUMNS, VALUE_COLUMNS
from abtest.analysis import analyze
from abtest.comparison import compare
from abtest.config import BUILTIN_METRICS, Analysis, ExperimentsConfig
from abtest.events import EXPOSURE_SCHEMA, OUTCOME_SCHEMA
from abtest.report import render_html
from tests.unit.test_abtest_stats import PC, PT, cuped_moments

COLS = VALUE_COLUMNS + PRE_COLUMNS
GB_CUPED_RELATIVE = {"estimate": 0.05095042925757812, "variance": 0.0007548861568248364}
LOOSE = Analysis(min_units_per_arm=2, min_nonzero_per_arm=0)


def columns(n, rng, buy):
    req = rng.poisson(5, n) + 1.0
    imp = req * 10
    clicks = rng.binomial(imp.astype(int), 0.05).astype(float)
    orders = (rng.random(n) < buy) * 1.0
    return [req, imp, clicks, orders, orders * rng.lognormal(3, 1, n), orders]


def arm(n, rng, buy=0.1, pre=True):
    """Per-unit columns of one arm (VALUE_COLUMNS + PRE_COLUMNS); the pre-period is an independent draw
    at the usual buy rate (assignment cannot change the past), or all zero."""
    z = columns(n, rng, buy) + (columns(n, rng, 0.1) if pre else [np.zeros(n)] * len(VALUE_COLUMNS))
    return S.Moments.from_array(COLS, np.column_stack(z))


def metric(name):
    return BUILTIN_METRICS[name]


def no_nan(c):
    """Every user-facing number is finite or the comparison says why not."""
    return all(math.isfinite(x) for x in (c.p_value, c.seq_p_value)) and (c.status == "ok" or c.reasons)


def test_zero_variance_returns_p_one_with_a_reason():
    m = S.Moments.from_array(COLS, np.zeros((50, len(COLS))))
    c = compare({"c": m, "t": m}, metric("gmv_per_user"), "c", "t", LOOSE)
    assert c.status == "not computable" and c.p_value == 1.0 and no_nan(c)
    assert any("variance" in r for r in c.reasons)


def test_zero_control_mean_keeps_the_absolute_test_and_drops_the_relative_lift():
    rng = np.random.default_rng(1)
    c_arm, t_arm = arm(400, rng, buy=0.0), arm(400, rng, buy=0.2)
    c = compare({"c": c_arm, "t": t_arm}, metric("gmv_per_user"), "c", "t", LOOSE)
    assert c.status == "ok" and c.p_value < 1e-6 and c.abs_lift > 0  # a real, absolute effect
    assert math.isnan(c.rel_lift) and any("control mean is 0" in r for r in c.reasons)


def test_ratio_metric_with_an_arm_without_orders_is_not_computable():
    rng = np.random.default_rng(2)
    c = compare({"c": arm(300, rng, buy=0.0), "t": arm(300, rng)}, metric("aov"), "c", "t", LOOSE)
    assert c.status == "not computable" and "no orders" in c.reasons[0] and no_nan(c)


@pytest.mark.parametrize("n_c,n_t", [(0, 50), (1, 1), (50, 0)])
def test_empty_or_single_unit_arms(n_c, n_t):
    rng = np.random.default_rng(3)
    arms = {"c": arm(n_c, rng), "t": arm(n_t, rng)}
    c = compare(arms, metric("gmv_per_user"), "c", "t", LOOSE)
    assert c.status == "not computable" and c.p_value == 1.0 and "unit" in c.reasons[0]


def test_cuped_falls_back_per_metric_without_pre_period_data():
    rng = np.random.default_rng(4)
    arms = {"c": arm(500, rng, pre=False), "t": arm(500, rng, pre=False)}
    c = compare(arms, metric("gmv_per_user"), "c", "t", Analysis())
    assert not c.cuped and c.control_value == c.control_unadjusted
    assert any(r.startswith("CUPED off") for r in c.reasons) and math.isfinite(c.rel_lift)


def test_cuped_falls_back_for_aov_when_an_arm_has_no_pre_period_orders():
    """The pre-period AOV of an arm without pre-period orders is 0/0: before, +nan% reached the user."""
    rng = np.random.default_rng(5)
    c_arm, t_arm = arm(500, rng), arm(500, rng)
    k = COLS.index("pre_orders")
    mean = t_arm.mean.copy()
    mean[k] = 0.0
    t_arm = S.Moments(t_arm.n, t_arm.names, mean, t_arm.cov, t_arm.nonzero)
    c = compare({"c": c_arm, "t": t_arm}, metric("aov"), "c", "t", Analysis(min_nonzero_per_arm=0))
    assert not c.cuped and math.isfinite(c.rel_lift) and any("CUPED off" in r for r in c.reasons)


def test_cuped_relative_lift_matches_gbstats():
    mc, mt = cuped_moments(PC), cuped_moments(PT)
    y = S.Moments(mc.n, ("gmv", "pre_gmv"), mc.mean, mc.cov), S.Moments(mt.n, ("gmv", "pre_gmv"), mt.mean, mt.cov)
    c = compare({"c": y[0], "t": y[1]}, metric("gmv_per_user"), "c", "t", Analysis(min_nonzero_per_arm=0))
    assert c.cuped
    assert c.rel_lift == pytest.approx(GB_CUPED_RELATIVE["estimate"], rel=1e-9)
    assert c.rel_se**2 == pytest.approx(GB_CUPED_RELATIVE["variance"], rel=1e-9)
    # the other definition: the ratio of the adjusted means (close, not equal)
    r = compare({"c": y[0], "t": y[1]}, metric("gmv_per_user"), "c", "t", Analysis(min_nonzero_per_arm=0, cuped_relative="ratio"))
    assert r.rel_lift == pytest.approx(r.treatment_value / r.control_value - 1) and abs(r.rel_lift - c.rel_lift) < 0.01
    # both intervals agree with the (identical) absolute-scale decision
    for x in (c, r):
        assert (x.rel_ci[0] > 0) == (x.abs_ci[0] > 0) == (x.p_value < 0.05)


def test_fieller_interval_agrees_with_the_absolute_test_and_never_goes_below_minus_100():
    rng = np.random.default_rng(6)
    a, b = rng.normal(1, 0.3, 5000), rng.normal(1, 0.3, 5000)
    va, vb = rng.uniform(0.001, 0.2, 5000), rng.uniform(0.001, 0.2, 5000)
    lo, hi = S.fieller_interval(a, b, va, vb, 0.0, 1.96)
    rejects = np.abs(a - b) > 1.96 * np.sqrt(va + vb)
    bounded = np.isfinite(lo)
    assert np.array_equal(~rejects[bounded], ((lo <= 1) & (1 <= hi))[bounded])
    assert np.all(np.isinf(hi[~bounded])) and np.array_equal(~bounded, b**2 <= 1.96**2 * vb)
    # a noisy, tiny treatment: the delta interval crosses -100%, the readout's does not
    m_c = S.Moments.from_array(["gmv"], rng.lognormal(3, 1, 200))
    m_t = S.Moments.from_array(["gmv"], np.r_[np.zeros(195), rng.lognormal(3, 1, 5)])
    c = compare({"c": m_c, "t": m_t}, metric("gmv_per_user"), "c", "t", Analysis(min_nonzero_per_arm=0, cuped=False))
    assert c.rel_ci[0] >= -1.0 and c.rel_ci[0] <= c.rel_lift <= c.rel_ci[1]


def test_minimum_sample_rule_blocks_the_decision():
    rng = np.random.default_rng(7)
    arms = {"c": arm(300, rng, buy=0.05), "t": arm(300, rng, buy=0.5)}
    c = compare(arms, metric("gmv_per_user"), "c", "t", Analysis(min_nonzero_per_arm=30))
    assert c.p_value < 0.05 and c.status == "not enough data" and "with gmv > 0" in c.reasons[-1]


def units_events(n_units=240, seed=0, orders=True, pre=True):
    """Tiny event logs for analyze(): control/treatment by unit parity."""
    rng = np.random.default_rng(seed)
    start = datetime(2026, 3, 2)
    ex, out = [], []
    for u in range(n_units):
        v = ("control", "treatment")[u % 2]
        for k in range(2):
            ts = start + timedelta(hours=int(rng.integers(0, 96)))
            ex.append({"request_id": f"r{u}-{k}", "ts": ts, "unit_id": f"u{u}", "model": "dlf", "n_items": 10,
                       "layer": "ranking", "experiment": "e", "variant": v})
            if rng.random() < 0.3:
                out.append({"request_id": f"r{u}-{k}", "ts": ts + timedelta(minutes=1), "unit_id": f"u{u}", "item_id": "i",
                            "event": "click", "value": 0.0})
                if orders and v == "treatment":
                    out.append({"request_id": f"r{u}-{k}", "ts": ts + timedelta(minutes=2), "unit_id": f"u{u}", "item_id": "i",
                                "event": "purchase", "value": float(rng.lognormal(3, 1))})
    cfg = ExperimentsConfig.model_validate({"layers": [{"name": "ranking", "experiments": [{
        "name": "e", "variants": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}],
        "metrics": ["gmv_per_user", "ctr", "conversion", "aov"], "guardrails": [{"metric": "ctr", "margin": 0.05}],
        "analysis": {"pre_period_days": 7 if pre else 0}}]}]})
    return cfg, pl.DataFrame(ex, schema=EXPOSURE_SCHEMA), pl.DataFrame(out, schema=OUTCOME_SCHEMA)


def test_degenerate_experiment_reads_out_with_statuses_and_no_nan_anywhere():
    """No pre-period, a control without a single order (AOV undefined, GMV control mean 0): the readout,
    its JSON and its HTML all come out, every comparison has a status, and no 'nan' is shown."""
    cfg, ex, out = units_events()
    r = analyze(cfg, "e", ex, out)
    by = {(c.metric, c.role): c for c in r.comparisons}
    assert by[("aov", "metric")].status == "not computable"
    assert math.isnan(by[("gmv_per_user", "metric")].rel_lift)
    assert by[("ctr", "guardrail")].decision in {"non-inferior", "not yet shown non-inferior", "harm", "not enough data"}
    assert r.verdicts and r.verdicts[0].verdict in {"keep running", "no verdict", "don't ship", "ship"}
    page = render_html(r)
    assert not re.search(r"\bnan\b", page, re.I), re.search(r".{80}\bnan\b.{20}", page, re.I)
    import json

    assert "NaN" not in json.dumps(r.to_dict())


def test_guardrail_decisions():
    rng = np.random.default_rng(8)
    base = arm(20000, rng)
    a = Analysis()
    same = compare({"c": base, "t": base}, metric("ctr"), "c", "t", a)
    same.margin = 0.05
    from abtest.comparison import guardrail_decision

    assert guardrail_decision(same) == "non-inferior"
    worse = S.Moments(base.n, base.names, base.mean * np.where(np.array(COLS) == "clicks", 0.8, 1.0), base.cov, base.nonzero)
    bad = compare({"c": base, "t": worse}, metric("ctr"), "c", "t", a)
    bad.margin = 0.05
    assert guardrail_decision(bad) == "harm"


def test_verdict_lines():
    from abtest.verdict import verdict_for

    rng = np.random.default_rng(9)
    a = Analysis(min_nonzero_per_arm=0, cuped=False)
    base = arm(4000, rng)
    same = compare({"c": base, "t": base}, metric("gmv_per_user"), "c", "t", a)
    same.decision = "inconclusive"
    keep = verdict_for(same, [], True, 0.05)
    assert keep.verdict == "keep running" and f"{same.users_more_per_arm:,} more users per arm" in keep.headline
    assert verdict_for(same, [], False, 0.05).verdict == "invalid"
    done = compare({"c": base, "t": base}, metric("gmv_per_user"), "c", "t", a.model_copy(update={"target_lift": 10.0}))
    done.decision = "inconclusive"
    assert verdict_for(done, [], True, 10.0).verdict == "don't ship"  # the sample could see a 1000% effect: none there
    win = compare({"c": base, "t": base}, metric("gmv_per_user"), "c", "t", a)
    win.decision = "significant improvement"
    harmed = compare({"c": base, "t": base}, metric("conversion"), "c", "t", a)
    harmed.decision, harmed.role = "harm", "guardrail"
    assert verdict_for(win, [], True, 0.05).verdict == "ship"
    assert verdict_for(win, [harmed], True, 0.05).verdict == "don't ship"
    harmed.decision = "not yet shown non-inferior"
    assert verdict_for(win, [harmed], True, 0.05).verdict == "keep running"
