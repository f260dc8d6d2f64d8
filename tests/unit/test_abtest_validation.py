"""Statistical validation by simulation (seeded, vectorised over thousands of experiments).

* A/A: the false-positive rate of Welch's test at alpha = 0.05 is within the binomial
  tolerance for a heavy-tailed mean metric (GMV per user) and a ratio metric (CTR, delta method);
* injected effects: 95% intervals of absolute and relative lifts cover the true lift;
* CUPED: with a predictive pre-period covariate the variance shrinks (estimated and empirical)
  and the intervals still cover;
* sequential: over 14 daily peeks the mSPRT keeps the false-positive rate <= alpha while
  "peek and stop at the first p < 0.05" with the fixed-horizon test inflates it.
"""

from __future__ import annotations

import numpy as np
import pytest

from abtest import stats as S

ALPHA = 0.05


def binom_tol(p: float, n: int, z: float = 3.29) -> float:
    """Half-width of a ~99.9% normal interval of a binomial proportion."""
    return z * np.sqrt(p * (1 - p) / n)


def gmv(rng, shape, scale=1.0):
    """Per-user GMV: 30% buyers, log-normal order values (heavy tail)."""
    return rng.lognormal(3.0, 1.0, shape) * (rng.random(shape) < 0.3) * scale


def mean_welch(c: np.ndarray, t: np.ndarray, relative: bool):
    n_c, n_t = c.shape[-1], t.shape[-1]
    mc, mt = c.mean(-1), t.mean(-1)
    vc, vt = c.var(-1, ddof=1) / n_c, t.var(-1, ddof=1) / n_t
    est, var = (S.relative_lift if relative else S.absolute_lift)(mt, vt, mc, vc)
    return S.t_test(est, var, S.welch_df(vt, n_t, vc, n_c), ALPHA)


def ratio_arrays(rng, R, n, p_mult=1.0):
    den = rng.poisson(8, (R, n)).astype(float) + 1
    p = rng.beta(2, 30, (R, n)) * p_mult
    num = rng.binomial(den.astype(np.int64), p).astype(float)
    return num, den


def ratio_welch(cn, cd, tn, td, relative: bool):
    def arm(num, den):
        n = num.shape[-1]
        mn, md = num.mean(-1), den.mean(-1)
        vn, vd = num.var(-1, ddof=1), den.var(-1, ddof=1)
        cov = ((num - mn[..., None]) * (den - md[..., None])).sum(-1) / (n - 1)
        return mn / md, S.ratio_variance(mn, md, vn, vd, cov, n), n

    rc, vc, n_c = arm(cn, cd)
    rt, vt, n_t = arm(tn, td)
    est, var = (S.relative_lift if relative else S.absolute_lift)(rt, vt, rc, vc)
    return S.t_test(est, var, S.welch_df(vt, n_t, vc, n_c), ALPHA)


def test_aa_false_positive_rate_mean_metric():
    rng = np.random.default_rng(101)
    R, n = 2000, 1000
    _, p, _, _ = mean_welch(gmv(rng, (R, n)), gmv(rng, (R, n)), relative=False)
    fpr = float(np.mean(p < ALPHA))
    assert abs(fpr - ALPHA) <= binom_tol(ALPHA, R), fpr
    _, p_rel, _, _ = mean_welch(gmv(rng, (R, n)), gmv(rng, (R, n)), relative=True)
    assert abs(np.mean(p_rel < ALPHA) - ALPHA) <= binom_tol(ALPHA, R)
    # p-values are uniform under the null (KS against U(0, 1))
    from scipy.stats import kstest

    assert kstest(p, "uniform").pvalue > 0.001


def test_aa_false_positive_rate_ratio_metric():
    rng = np.random.default_rng(202)
    R, n = 2000, 800
    cn, cd = ratio_arrays(rng, R, n)
    tn, td = ratio_arrays(rng, R, n)
    for relative in (False, True):
        _, p, _, _ = ratio_welch(cn, cd, tn, td, relative)
        fpr = float(np.mean(p < ALPHA))
        assert abs(fpr - ALPHA) <= binom_tol(ALPHA, R), (relative, fpr)


def test_injected_effect_interval_coverage_mean_metric():
    rng = np.random.default_rng(303)
    R, n, lift = 2000, 1500, 0.08
    c, t = gmv(rng, (R, n)), gmv(rng, (R, n), scale=1 + lift)
    true_mean = 0.3 * np.exp(3.0 + 0.5)
    _, _, lo, hi = mean_welch(c, t, relative=True)
    cover_rel = float(np.mean((lo <= lift) & (lift <= hi)))
    _, _, lo, hi = mean_welch(c, t, relative=False)
    cover_abs = float(np.mean((lo <= lift * true_mean) & (lift * true_mean <= hi)))
    for cover in (cover_rel, cover_abs):
        assert abs(cover - 0.95) <= binom_tol(0.95, R), (cover_rel, cover_abs)


def test_injected_effect_interval_coverage_ratio_metric():
    rng = np.random.default_rng(404)
    R, n, lift = 2000, 800, 0.1
    cn, cd = ratio_arrays(rng, R, n)
    tn, td = ratio_arrays(rng, R, n, p_mult=1 + lift)
    _, _, lo, hi = ratio_welch(cn, cd, tn, td, relative=True)
    cover = float(np.mean((lo <= lift) & (lift <= hi)))
    assert abs(cover - 0.95) <= binom_tol(0.95, R), cover


def test_cuped_shrinks_variance_and_keeps_coverage():
    rng = np.random.default_rng(505)
    R, n, lift = 600, 1000, 0.05
    plain_est, cuped_est, plain_var, cuped_var, covered = [], [], [], [], []
    for _ in range(R):
        arms = []
        for scale in (1.0, 1 + lift):
            habit = rng.lognormal(2.0, 0.8, n)  # a user's spending level drives both periods
            pre = rng.poisson(habit).astype(float)
            post = rng.poisson(habit * scale).astype(float)
            arms.append(S.Moments.from_array(["y", "pre_y"], np.column_stack([post, pre])))
        mc, mt = arms
        theta, pool = S.pooled_theta([mc, mt], "mean", ["y"], ["pre_y"])
        pc, pt = S.metric_estimate(mc, "mean", ["y"]), S.metric_estimate(mt, "mean", ["y"])
        cc = S.metric_estimate(mc, "mean", ["y"], ["pre_y"], theta, pool)
        ct = S.metric_estimate(mt, "mean", ["y"], ["pre_y"], theta, pool)
        rp, rc = S.welch_t_test(pt, pc, relative=True), S.welch_t_test(ct, cc, relative=True)
        plain_est.append(rp.estimate)
        cuped_est.append(rc.estimate)
        plain_var.append(rp.se**2)
        cuped_var.append(rc.se**2)
        covered.append(rc.ci[0] <= lift <= rc.ci[1])
    # estimated and empirical variances both shrink a lot (corr(pre, post) is high here)
    assert np.mean(cuped_var) < 0.5 * np.mean(plain_var)
    assert np.var(cuped_est) < 0.5 * np.var(plain_est)
    # the delta-method variance of the CUPED lift matches its empirical variance
    assert np.mean(cuped_var) == pytest.approx(np.var(cuped_est), rel=0.15)
    # unbiased and covering
    assert abs(np.mean(cuped_est) - lift) < 4 * np.sqrt(np.var(cuped_est) / R)
    assert abs(np.mean(covered) - 0.95) <= binom_tol(0.95, R)


def test_sequential_peeking_keeps_false_positives_below_alpha():
    rng = np.random.default_rng(606)
    R, days, per_day = 2000, 14, 150
    c = gmv(rng, (R, days * per_day))
    t = gmv(rng, (R, days * per_day))
    naive_reject = np.zeros(R, dtype=bool)
    seq_p = []
    for d in range(1, days + 1):
        k = d * per_day
        est, var, _ = _relative(c[:, :k], t[:, :k])
        _, p, _, _ = S.t_test(est, var, np.inf, ALPHA)
        naive_reject |= p < ALPHA
        tau2 = S.tau2_for_horizon(var, 2 * k, n_star=2 * days * per_day, alpha=ALPHA)
        seq_p.append(S.msprt_pvalue(est, var, tau2))
    always = S.always_valid(np.stack(seq_p, axis=1), axis=1)
    seq_fpr = float(np.mean(always[:, -1] < ALPHA))
    naive_fpr = float(np.mean(naive_reject))
    assert seq_fpr <= ALPHA, seq_fpr
    assert naive_fpr > 2 * ALPHA, naive_fpr  # ~0.2 with 14 looks
    # and it still has power against a real effect
    t2 = gmv(rng, (R // 4, days * per_day), scale=1.6)
    est, var, _ = _relative(c[: R // 4], t2)
    tau2 = S.tau2_for_horizon(var, 2 * days * per_day, n_star=2 * days * per_day)
    assert np.mean(S.msprt_pvalue(est, var, tau2) < ALPHA) > 0.5


def _relative(c, t):
    n = c.shape[-1]
    mc, mt = c.mean(-1), t.mean(-1)
    vc, vt = c.var(-1, ddof=1) / n, t.var(-1, ddof=1) / n
    est, var = S.relative_lift(mt, vt, mc, vc)
    return est, var, n


def test_confidence_sequence_covers_uniformly_over_looks():
    """With a true effect, the running-intersection confidence sequence contains it at every look in >= 95% of runs."""
    rng = np.random.default_rng(707)
    R, days, per_day, lift = 1000, 14, 150, 0.1
    c = gmv(rng, (R, days * per_day))
    t = gmv(rng, (R, days * per_day), scale=1 + lift)
    lows, highs = [], []
    for d in range(1, days + 1):
        est, var, _ = _relative(c[:, : d * per_day], t[:, : d * per_day])
        tau2 = S.tau2_for_horizon(var, 2 * d * per_day, n_star=2 * days * per_day)
        h = S.msprt_halfwidth(var, tau2)
        lows.append(est - h)
        highs.append(est + h)
    _, lo, hi = S.always_valid(np.ones((R, days)), np.stack(lows, 1), np.stack(highs, 1), axis=1)
    covered_always = np.all((lo <= lift) & (lift <= hi), axis=1)
    assert np.mean(covered_always) >= 0.95 - binom_tol(0.95, R)
