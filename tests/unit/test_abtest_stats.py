"""The statistics engine against independent reference computations (to 1e-6).

References:
* gbstats 0.8.0 (GrowthBook's engine), numbers computed once in a scratch venv
  (it pins numpy<2, so it cannot be a dependency) by this script on the summary
  statistics below and pasted here:
      from gbstats.models.statistics import SampleMeanStatistic, RatioStatistic, RegressionAdjustedStatistic, compute_theta
      from gbstats.frequentist.tests import TwoSidedTTest, FrequentistConfig, SequentialTwoSidedTTest, SequentialConfig
      from gbstats.bayesian.tests import EffectBayesianABTest, EffectBayesianConfig, GaussianPrior
      TwoSidedTTest(SampleMeanStatistic(**C), SampleMeanStatistic(**T), FrequentistConfig(difference_type="relative")).compute_result()
      ... (RatioStatistic for RC/RT, RegressionAdjustedStatistic + compute_theta for PC/PT,
      SequentialTwoSidedTTest(tuning 5000), EffectBayesianABTest(prior N(0, 0.3^2), proper))
* scipy (Welch t-test, chi-square) and statsmodels (Holm, Benjamini-Hochberg, Welch) on raw data;
* the published formulas written out independently (delta method by influence functions).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from abtest import stats as S

TOL = dict(rel=1e-6, abs=1e-9)

C = dict(n=5000, sum=61234.5, sum_squares=4_512_345.25)
T = dict(n=5100, sum=65870.25, sum_squares=4_870_112.5)
RC = dict(n=5000, m_sum=3120.0, m_ss=6050.0, d_sum=51234.0, d_ss=701_234.0, md=61_020.0)
RT = dict(n=5100, m_sum=3390.0, m_ss=6700.0, d_sum=52010.0, d_ss=712_400.0, md=65_110.0)
PC = dict(n=5000, post_sum=61234.5, post_ss=4_512_345.25, pre_sum=58012.0, pre_ss=4_102_000.5, pp=3_612_000.75)
PT = dict(n=5100, post_sum=65870.25, post_ss=4_870_112.5, pre_sum=59440.5, pre_ss=4_200_120.0, pp=3_780_450.0)

GB = {
    "mean_relative": {"estimate": 0.054612619856261355, "ci": [-0.036208562062134214, 0.14543380177465692], "p": 0.23854247999222844,
                      "dof": 10097.888580050498, "variance": 0.0021467130622173525},
    "mean_absolute": {"estimate": 0.6688352941176472, "ci": [-0.41387584981056524, 1.7515464380458596], "p": 0.22596373221777677,
                      "variance": 0.30508785098058344},
    "ratio_var_c": 0.0023217047396185972,
    "ratio_var_t": 0.0023361520175421927,
    "ratio_relative": {"estimate": 0.07032708207001616, "ci": [0.038299408872041266, 0.10235475526799105], "p": 1.6913382216543482e-05},
    "ratio_absolute": {"estimate": 0.004282712574822392, "ci": [0.00240009478458135, 0.0061653303650634345], "p": 8.315492352251042e-06},
    "cuped": {"theta": 0.8526707612740384, "estimate": 0.6239848120746334, "ci": [-0.01827298698286528, 1.266242611132132],
              "p": 0.05688272628586155, "var_c": 261.51144555528117, "var_t": 280.76400050518487},
    "sequential_relative": {"estimate": 0.054612619856261355, "ci": [-0.08726733600293184, 0.19649257571545453], "p": 1.0},
    "sequential_ratio_relative": {"estimate": 0.07032708207001616, "ci": [0.020293768060550298, 0.12036039607948201], "p": 0.0006742870178949994},
    "bayes_relative": {"expected": 0.0533403267867496, "sd": 0.04578975607666531, "chance_to_win": 0.8779695556629736,
                       "ci": [-0.03640594598438851, 0.1430865995578877], "risk": [0.056099760672585784, 0.0027594338858361878]},
    "bayes_ratio_relative": {"expected": 0.07011909122543146, "sd": 0.01631481166248685, "chance_to_win": 0.9999913779990102,
                             "ci": [0.038142647952403186, 0.10209553449845973], "risk": [0.07011912111091596, 2.9885484497318224e-08]},
}


def mean_moments(d) -> S.Moments:
    return S.Moments.from_sums(d["n"], ["y"], np.array([d["sum"]]), np.array([[d["sum_squares"]]]))


def ratio_moments(d) -> S.Moments:
    return S.Moments.from_sums(d["n"], ["m", "d"], np.array([d["m_sum"], d["d_sum"]]), np.array([[d["m_ss"], d["md"]], [d["md"], d["d_ss"]]]))


def cuped_moments(d) -> S.Moments:
    return S.Moments.from_sums(d["n"], ["y", "pre_y"], np.array([d["post_sum"], d["pre_sum"]]),
                               np.array([[d["post_ss"], d["pp"]], [d["pp"], d["pre_ss"]]]))


def approx(x, ref):
    return x == pytest.approx(ref, **TOL)


# ------------------------------------------------------------------------------------ gbstats


@pytest.mark.parametrize("relative", [True, False])
def test_mean_metric_welch_matches_gbstats(relative):
    c = S.metric_estimate(mean_moments(C), "mean", ["y"])
    t = S.metric_estimate(mean_moments(T), "mean", ["y"])
    r = S.welch_t_test(t, c, 0.05, relative=relative)
    ref = GB["mean_relative" if relative else "mean_absolute"]
    assert approx(r.estimate, ref["estimate"]) and approx(r.se**2, ref["variance"])
    assert approx(r.p_value, ref["p"]) and approx(list(r.ci), ref["ci"])
    assert approx(r.df, GB["mean_relative"]["dof"])


@pytest.mark.parametrize("relative", [True, False])
def test_ratio_metric_delta_method_matches_gbstats(relative):
    mc, mt = ratio_moments(RC), ratio_moments(RT)
    c = S.metric_estimate(mc, "ratio", ["m", "d"])
    t = S.metric_estimate(mt, "ratio", ["m", "d"])
    assert approx(c.variance * mc.n, GB["ratio_var_c"]) and approx(t.variance * mt.n, GB["ratio_var_t"])
    # the broadcastable scalar formula agrees with the Moments path
    v = S.ratio_variance(mc.mean[0], mc.mean[1], mc.cov[0, 0], mc.cov[1, 1], mc.cov[0, 1], mc.n)
    assert approx(v, c.variance)
    r = S.welch_t_test(t, c, 0.05, relative=relative)
    ref = GB["ratio_relative" if relative else "ratio_absolute"]
    assert approx(r.estimate, ref["estimate"]) and approx(r.p_value, ref["p"]) and approx(list(r.ci), ref["ci"])


def test_cuped_theta_and_adjusted_lift_match_gbstats():
    mc, mt = cuped_moments(PC), cuped_moments(PT)
    theta, pool = S.pooled_theta([mc, mt], "mean", ["y"], ["pre_y"])
    assert approx(theta, GB["cuped"]["theta"])
    c = S.metric_estimate(mc, "mean", ["y"], ["pre_y"], theta, pool)
    t = S.metric_estimate(mt, "mean", ["y"], ["pre_y"], theta, pool)
    assert approx(c.variance * mc.n, GB["cuped"]["var_c"]) and approx(t.variance * mt.n, GB["cuped"]["var_t"])
    r = S.welch_t_test(t, c, 0.05)
    assert approx(r.estimate, GB["cuped"]["estimate"]) and approx(r.p_value, GB["cuped"]["p"]) and approx(list(r.ci), GB["cuped"]["ci"])


@pytest.mark.parametrize("kind,key", [("mean", "sequential_relative"), ("ratio", "sequential_ratio_relative")])
def test_msprt_matches_gbstats_sequential(kind, key):
    if kind == "mean":
        mc, mt, cols = mean_moments(C), mean_moments(T), ["y"]
    else:
        mc, mt, cols = ratio_moments(RC), ratio_moments(RT), ["m", "d"]
    c, t = S.metric_estimate(mc, kind, cols), S.metric_estimate(mt, kind, cols)
    est, var = S.relative_lift(t.value, t.variance, c.value, c.variance)
    r = S.sequential_test(est, var, mc.n + mt.n, n_star=5000, alpha=0.05)
    ref = GB[key]
    assert approx(r.estimate, ref["estimate"]) and approx(r.p_value, ref["p"]) and approx(list(r.ci), ref["ci"])


def test_msprt_equals_the_published_mixture_likelihood_ratio():
    """Johari et al. (2017): Lambda_n = sqrt(s2 / (s2 + n tau2)) exp(n^2 tau2 xbar^2 / (2 s2 (s2 + n tau2)))
    for the mean of n paired differences with variance s2."""
    s2, n, tau2_unit, xbar = 4.0, 800, 0.01, 0.21
    lam = np.sqrt(s2 / (s2 + n * tau2_unit)) * np.exp(n**2 * tau2_unit * xbar**2 / (2 * s2 * (s2 + n * tau2_unit)))
    # in estimator units: v = s2 / n and the mixing variance tau2 on the same scale as xbar
    assert approx(S.msprt_pvalue(xbar, s2 / n, tau2_unit), min(1.0, 1 / lam))
    # the confidence sequence is exactly the set of nulls the test does not reject at alpha
    alpha, v = 0.05, s2 / n
    h = S.msprt_halfwidth(v, tau2_unit, alpha)
    assert approx(S.msprt_pvalue(xbar, v, tau2_unit, null=xbar + h), alpha)
    assert approx(S.msprt_pvalue(xbar, v, tau2_unit, null=xbar - h), alpha)


@pytest.mark.parametrize("kind,key", [("mean", "bayes_relative"), ("ratio", "bayes_ratio_relative")])
def test_bayesian_readout_matches_gbstats(kind, key):
    if kind == "mean":
        mc, mt, cols = mean_moments(C), mean_moments(T), ["y"]
    else:
        mc, mt, cols = ratio_moments(RC), ratio_moments(RT), ["m", "d"]
    c, t = S.metric_estimate(mc, kind, cols), S.metric_estimate(mt, kind, cols)
    est, var = S.relative_lift(t.value, t.variance, c.value, c.variance)
    b = S.bayes_readout(est, var, prior_mean=0.0, prior_sd=0.3, proper=True)
    ref = GB[key]
    assert approx(b.mean, ref["expected"]) and approx(b.sd, ref["sd"]) and approx(b.chance_to_beat_control, ref["chance_to_win"])
    assert approx(list(b.credible_interval), ref["ci"])
    # gbstats risk = [risk of keeping control, risk of shipping treatment]
    assert b.expected_loss_control == pytest.approx(ref["risk"][0], rel=1e-6)
    assert b.expected_loss_treatment == pytest.approx(ref["risk"][1], rel=1e-6, abs=1e-12)


def test_flat_prior_posterior_is_the_likelihood():
    mu, var = S.gaussian_posterior(0.03, 0.0004, 0.0, 0.09, proper=False)
    assert mu == 0.03 and var == 0.0004


# ------------------------------------------------------------------------- scipy / statsmodels


@pytest.fixture(scope="module")
def raw():
    rng = np.random.default_rng(7)
    c = rng.lognormal(1.0, 1.2, 3000) * (rng.random(3000) < 0.3)
    t = rng.lognormal(1.05, 1.2, 3300) * (rng.random(3300) < 0.31)
    return c, t


def test_welch_matches_scipy_and_statsmodels(raw):
    c, t = raw
    ec = S.metric_estimate(S.Moments.from_array(["y"], c), "mean", ["y"])
    et = S.metric_estimate(S.Moments.from_array(["y"], t), "mean", ["y"])
    r = S.welch_t_test(et, ec, 0.05)
    ref = sps.ttest_ind(t, c, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert approx(r.statistic, ref.statistic) and approx(r.p_value, ref.pvalue) and approx(r.df, ref.df)
    assert approx(list(r.ci), [ci.low, ci.high])
    sm = pytest.importorskip("statsmodels.stats.weightstats")
    stat, p, df = sm.ttest_ind(t, c, usevar="unequal")
    assert approx(r.p_value, p) and approx(r.statistic, stat)


def test_moments_from_array_and_from_sums_agree(raw):
    c, _ = raw
    z = np.column_stack([c, c**0.5, (c > 0).astype(float)])
    a = S.Moments.from_array(["a", "b", "c"], z)
    b = S.Moments.from_sums(len(z), ["a", "b", "c"], z.sum(0), z.T @ z)
    np.testing.assert_allclose(a.cov, b.cov, rtol=1e-9)
    np.testing.assert_allclose(a.cov, np.cov(z, rowvar=False), rtol=1e-12)
    pooled = S.Moments.pool([S.Moments.from_array(["a", "b", "c"], z[:1000]), S.Moments.from_array(["a", "b", "c"], z[1000:])])
    np.testing.assert_allclose(pooled.cov, a.cov, rtol=1e-9)
    np.testing.assert_allclose(pooled.mean, a.mean, rtol=1e-12)


def test_ratio_delta_method_equals_influence_function_variance():
    rng = np.random.default_rng(3)
    den = rng.poisson(12, 4000).astype(float) + 1
    num = rng.binomial(den.astype(int), 0.06).astype(float)
    m = S.Moments.from_array(["n", "d"], np.column_stack([num, den]))
    e = S.metric_estimate(m, "ratio", ["n", "d"])
    r = num.mean() / den.mean()
    phi = (num - r * den) / den.mean()
    assert approx(e.value, r) and approx(e.variance, phi.var(ddof=1) / len(num))


def test_cuped_ratio_equals_explicit_influence_functions():
    """CUPED for a ratio metric: theta from the pooled linearised ratios, per-arm variance of phi_Y - theta phi_X."""
    rng = np.random.default_rng(11)

    def arm(n, lift):
        pre_d = rng.poisson(10, n).astype(float) + 1
        p = rng.beta(2, 30, n)
        pre_n = rng.binomial(pre_d.astype(int), p).astype(float)
        d = rng.poisson(10, n).astype(float) + 1
        num = rng.binomial(d.astype(int), np.minimum(1, p * lift)).astype(float)
        return np.column_stack([num, d, pre_n, pre_d])

    A, B = arm(4000, 1.0), arm(4200, 1.05)
    names = ["n", "d", "pre_n", "pre_d"]
    ma, mb = S.Moments.from_array(names, A), S.Moments.from_array(names, B)
    theta, pool = S.pooled_theta([ma, mb], "ratio", ["n", "d"], ["pre_n", "pre_d"])
    # independent: pooled sample, linearisations with pooled means
    P = np.vstack([A, B])
    ry, rx = P[:, 0].mean() / P[:, 1].mean(), P[:, 2].mean() / P[:, 3].mean()
    phy, phx = (P[:, 0] - ry * P[:, 1]) / P[:, 1].mean(), (P[:, 2] - rx * P[:, 3]) / P[:, 3].mean()
    theta_ref = np.cov(phy, phx)[0, 1] / phx.var(ddof=1)
    assert approx(theta, theta_ref) and approx(pool, rx)
    for Z, m in ((A, ma), (B, mb)):
        e = S.metric_estimate(m, "ratio", ["n", "d"], ["pre_n", "pre_d"], theta, pool)
        r_y, r_x = Z[:, 0].mean() / Z[:, 1].mean(), Z[:, 2].mean() / Z[:, 3].mean()
        fy = (Z[:, 0] - r_y * Z[:, 1]) / Z[:, 1].mean()
        fx = (Z[:, 2] - r_x * Z[:, 3]) / Z[:, 3].mean()
        assert approx(e.value, r_y - theta_ref * (r_x - rx))
        assert approx(e.variance, (fy - theta_ref * fx).var(ddof=1) / len(Z))
        assert e.variance < S.metric_estimate(m, "ratio", ["n", "d"]).variance


def test_relative_lift_delta_variance_formula():
    est, var = S.relative_lift(10.5, 0.04, 10.0, 0.05)
    assert approx(est, 0.05)
    assert approx(var, 0.04 / 100 + 10.5**2 * 0.05 / 10**4)
    est, var = S.absolute_lift(10.5, 0.04, 10.0, 0.05)
    assert approx(est, 0.5) and approx(var, 0.09)


def test_srm_matches_scipy_chisquare():
    r = S.srm_test([5210, 4790], [1, 1])
    ref = sps.chisquare([5210, 4790], [5000, 5000])
    assert approx(r.chi2, ref.statistic) and approx(r.p_value, ref.pvalue)
    assert not r.passed and r.p_value < 0.001
    ok = S.srm_test([3355, 3310, 3335], [1, 1, 1])
    assert ok.passed
    weighted = S.srm_test([2000, 8000], [0.2, 0.8])
    assert weighted.p_value == pytest.approx(1.0) and weighted.passed


def test_holm_and_bh_match_statsmodels():
    mt = pytest.importorskip("statsmodels.stats.multitest")
    p = np.array([0.001, 0.04, 0.03, 0.2, 0.012, 0.5, 0.0001, 0.049])
    for mine, method in ((S.holm(p), "holm"), (S.benjamini_hochberg(p), "fdr_bh")):
        ref = mt.multipletests(p, alpha=0.05, method=method)[1]
        np.testing.assert_allclose(mine, ref, rtol=1e-12)
    np.testing.assert_allclose(S.adjust(p, "none"), p)
    assert S.holm([]).size == 0


def test_winsorize_nonzero_percentiles():
    v = np.array([0, 0, 0, 0, 1.0, 2, 3, 4, 5, 100])
    lo, hi = S.winsor_bounds(v, upper=0.9, nonzero_only=True)
    assert hi == pytest.approx(np.quantile([1, 2, 3, 4, 5, 100], 0.9))
    w = S.winsorize(v, upper=0.9, nonzero_only=True)
    assert w[:4].tolist() == [0, 0, 0, 0] and w[-1] == pytest.approx(hi) and w[4] == 1
    # over all values the 90th percentile is lower
    assert S.winsor_bounds(v, upper=0.9)[1] < hi
    w2 = S.winsorize(v, upper=0.9, lower=0.1)
    assert w2.min() == pytest.approx(np.quantile(v, 0.1)) and w2.max() == pytest.approx(np.quantile(v, 0.9))


def test_sample_size_mde_and_power_are_one_formula():
    from abtest import power

    n = power.sample_size_per_arm(mean=1.0, sd=1.0, lift=0.1)
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    assert approx(n, z * z * 2 / 0.01)
    assert approx(power.minimum_detectable_effect(1.0, 1.0, n), 0.1)
    assert power.power_at(1.0, 1.0, 0.1, n) == pytest.approx(0.8, abs=1e-4)  # (+ the far tail, ~1e-6)
    assert approx(power.sample_size_per_arm(2.0, 3.0, 0.1, variance_reduction=0.3), 0.7 * 9 / 4 * n)


def test_functions_broadcast_over_arrays():
    est = np.array([0.1, 0.0, -0.2])
    var = np.array([0.01, 0.02, 0.01])
    stat, p, lo, hi = S.t_test(est, var, np.inf, 0.05)
    for i in range(3):
        r = S.t_test(float(est[i]), float(var[i]), np.inf, 0.05)
        assert approx(p[i], r.p_value) and approx(lo[i], r.ci[0])
    assert S.msprt_pvalue(est, var, 0.01).shape == (3,)
