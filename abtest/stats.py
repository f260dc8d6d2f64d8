"""The statistics engine: small pure functions over summary statistics.

Everything here works on sufficient statistics (counts, means, (co)variances),
never on event rows, and the scalar formulas broadcast over numpy arrays, so one
call can analyse thousands of simulated experiments at once (the A/A and
coverage validations do exactly that).

Conventions
-----------
* ``var`` of a per-unit column is the sample variance (ddof = 1); the variance of an
  *estimator* (a mean, a ratio of means, a lift) is called ``v`` or ``variance``.
* Ratio metrics (CTR = clicks / impressions, AOV = GMV / orders) are ratios of
  per-unit means; their variance comes from the delta method:
  ``v(R) = (var_n / mu_d^2 - 2 mu_n cov_nd / mu_d^3 + mu_n^2 var_d / mu_d^4) / n``.
* Absolute lift ``t - c`` has variance ``v_t + v_c``; relative lift ``t / c - 1`` has
  the delta-method variance ``v_t / c^2 + t^2 v_c / c^4``.
* Welch's t-test with Welch-Satterthwaite degrees of freedom (``df = inf`` gives a z-test).
* CUPED: ``Y_cv = Y - theta (X - X_pool)`` with ``theta = cov(Y, X) / var(X)`` computed on
  both arms pooled (as GrowthBook/Eppo do). For ratio metrics Y and X are the
  linearised (influence-function) ratios, so the same formula applies.

This module holds the fixed-horizon side (moments, delta method, CUPED, Welch tests, Fieller,
SRM, winsorization); power and sample size live in abtest/power.py. The readouts that build on it live in their own
modules and are re-exported here, so ``abtest.stats`` stays the one import path:
abtest/sequential.py (mSPRT), abtest/multiple_testing.py (Holm, BH) and
abtest/bayes.py (Bayesian readout).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import special
from scipy import stats as sps

from abtest.bayes import BayesResult, bayes_readout, expected_losses, gaussian_posterior  # noqa: F401  (re-exported)
from abtest.multiple_testing import adjust, benjamini_hochberg, holm  # noqa: F401  (re-exported)
from abtest.sequential import (  # noqa: F401  (re-exported)
    SequentialResult,
    always_valid,
    msprt_halfwidth,
    msprt_pvalue,
    sequential_test,
    tau2_for_horizon,
)

ArrayLike = float | np.ndarray


# ---------------------------------------------------------------------------------------------
# Summary statistics of per-unit columns
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Moments:
    """n, means and the (ddof=1) covariance matrix of a set of per-unit columns, for one arm."""

    n: int
    names: tuple[str, ...]
    mean: np.ndarray
    cov: np.ndarray
    nonzero: np.ndarray | None = None
    """Units with a non-zero value per column (buyers for gmv, clickers for clicks): the
    minimum-sample rule counts them, since a heavy-tailed mean is driven by its few non-zero units."""

    @classmethod
    def from_sums(
        cls, n: int, names: Sequence[str], sums: np.ndarray, cross: np.ndarray, nonzero: np.ndarray | None = None
    ) -> "Moments":
        """From ``sums[i] = sum_u z_ui`` and ``cross[i, j] = sum_u z_ui z_uj``."""
        sums = np.asarray(sums, dtype=np.float64)
        cross = np.asarray(cross, dtype=np.float64)
        mean = sums / n if n else np.zeros_like(sums)
        cov = (cross - np.outer(sums, sums) / n) / (n - 1) if n > 1 else np.zeros_like(cross)
        nz = None if nonzero is None else np.asarray(nonzero, dtype=np.int64)
        return cls(int(n), tuple(names), mean, cov, nz)

    @classmethod
    def from_array(cls, names: Sequence[str], z: np.ndarray) -> "Moments":
        z = np.asarray(z, dtype=np.float64)
        if z.ndim == 1:
            z = z[:, None]
        n = z.shape[0]
        # centre first: numerically better than raw cross products
        mean = z.mean(axis=0) if n else np.zeros(z.shape[1])
        zc = z - mean
        cov = zc.T @ zc / (n - 1) if n > 1 else np.zeros((z.shape[1], z.shape[1]))
        return cls(n, tuple(names), mean, cov, np.count_nonzero(z, axis=0))

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no column {name!r} in the per-unit statistics ({list(self.names)})") from None

    def count_nonzero(self, name: str) -> int:
        """Units with a non-zero value of ``name`` (n when unknown: the rule then counts units)."""
        return self.n if self.nonzero is None else int(self.nonzero[self.index(name)])

    def var(self, name: str) -> float:
        i = self.index(name)
        return float(self.cov[i, i])

    def sums(self) -> np.ndarray:
        return self.mean * self.n

    def cross(self) -> np.ndarray:
        return self.cov * (self.n - 1) + np.outer(self.mean, self.mean) * self.n

    @staticmethod
    def pool(parts: Sequence["Moments"]) -> "Moments":
        """The moments of the union of the arms (one pooled mean, as in GrowthBook's joint statistic)."""
        names = parts[0].names
        n = sum(p.n for p in parts)
        nz = None if any(p.nonzero is None for p in parts) else sum(p.nonzero for p in parts)
        return Moments.from_sums(n, names, sum(p.sums() for p in parts), sum(p.cross() for p in parts), nz)


def sample_variance(n: ArrayLike, total: ArrayLike, sum_squares: ArrayLike) -> ArrayLike:
    """ddof=1 variance from n, sum and sum of squares."""
    return (sum_squares - np.square(total) / n) / (n - 1)


def sample_covariance(n: ArrayLike, sum_x: ArrayLike, sum_y: ArrayLike, sum_xy: ArrayLike) -> ArrayLike:
    return (sum_xy - sum_x * sum_y / n) / (n - 1)


def ratio_variance(
    mean_num: ArrayLike, mean_den: ArrayLike, var_num: ArrayLike, var_den: ArrayLike, cov: ArrayLike, n: ArrayLike
) -> ArrayLike:
    """Delta-method variance of mean(num) / mean(den) over n units."""
    r = mean_num / mean_den
    return (var_num - 2 * r * cov + r * r * var_den) / (np.square(mean_den) * n)


# ---------------------------------------------------------------------------------------------
# Metric estimates from Moments (mean, ratio, CUPED-adjusted)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A metric estimate for one arm: value, variance of the estimator, units."""

    value: float
    variance: float
    n: int
    unadjusted: float
    """The plain (not CUPED-adjusted) value."""

    @property
    def se(self) -> float:
        return float(np.sqrt(max(self.variance, 0.0)))


def _linear(m: Moments, kind: str, cols: Sequence[str]) -> tuple[float, np.ndarray]:
    """Value and gradient (w.r.t. the column means) of a mean or ratio metric."""
    g = np.zeros(len(m.names))
    if kind == "mean":
        i = m.index(cols[0])
        g[i] = 1.0
        return float(m.mean[i]), g
    i, j = m.index(cols[0]), m.index(cols[1])
    mu_n, mu_d = m.mean[i], m.mean[j]
    if mu_d == 0:
        return float("nan"), g
    r = mu_n / mu_d
    g[i], g[j] = 1.0 / mu_d, -r / mu_d
    return float(r), g


def metric_estimate(
    m: Moments,
    kind: str,
    cols: Sequence[str],
    covariate_cols: Sequence[str] | None = None,
    theta: float = 0.0,
    covariate_pool: float = 0.0,
) -> Estimate:
    """Mean or ratio metric for one arm, optionally CUPED-adjusted.

    With a covariate: ``value = Y - theta (X - covariate_pool)`` where X is the same
    kind of metric on the pre-period columns, and the variance is the delta-method
    variance of that linear combination (``g' Sigma g / n``).
    """
    y, gy = _linear(m, kind, cols)
    if m.n < 2:
        return Estimate(y, float("nan"), m.n, y)
    if covariate_cols is None or theta == 0.0:
        return Estimate(y, float(gy @ m.cov @ gy / m.n), m.n, y)
    x, gx = _linear(m, kind, covariate_cols)
    g = gy - theta * gx
    return Estimate(y - theta * (x - covariate_pool), float(g @ m.cov @ g / m.n), m.n, y)


def adjusted_plain_covariance(
    m: Moments, kind: str, cols: Sequence[str], covariate_cols: Sequence[str] | None, theta: float
) -> float:
    """Covariance of one arm's CUPED-adjusted estimate with its plain estimate, ``(g_y - theta g_x)' Sigma g_y / n``.

    GrowthBook's CUPED relative lift divides the adjusted difference by the *plain* control mean;
    its interval needs this covariance between numerator and denominator."""
    if m.n < 2:
        return 0.0
    _, gy = _linear(m, kind, cols)
    g = gy
    if covariate_cols is not None and theta != 0.0:
        g = gy - theta * _linear(m, kind, covariate_cols)[1]
    return float(g @ m.cov @ gy / m.n)


def pooled_theta(arms: Sequence[Moments], kind: str, cols: Sequence[str], covariate_cols: Sequence[str]) -> tuple[float, float]:
    """CUPED theta pooled over the arms, and the pooled covariate value.

    theta = cov(phi_Y, phi_X) / var(phi_X) on the pooled sample, phi being the
    linearisation of the metric (the column itself for mean metrics). For mean metrics
    this is GrowthBook's ``compute_theta`` (joint covariance / joint variance).
    """
    joint = Moments.pool(arms)
    _, gy = _linear(joint, kind, cols)
    x, gx = _linear(joint, kind, covariate_cols)
    vx = float(gx @ joint.cov @ gx)
    if not np.isfinite(vx) or vx <= 0:
        return 0.0, x
    return float(gy @ joint.cov @ gx) / vx, x


# ---------------------------------------------------------------------------------------------
# Lifts and tests
# ---------------------------------------------------------------------------------------------


def absolute_lift(mean_t: ArrayLike, v_t: ArrayLike, mean_c: ArrayLike, v_c: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
    """t - c and its variance (independent arms)."""
    return mean_t - mean_c, v_t + v_c


def relative_lift(mean_t: ArrayLike, v_t: ArrayLike, mean_c: ArrayLike, v_c: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
    """t / c - 1 and its delta-method variance ``v_t / c^2 + t^2 v_c / c^4``."""
    c2 = np.square(mean_c)
    return mean_t / mean_c - 1.0, v_t / c2 + np.square(mean_t) * v_c / (c2 * c2)


def fieller_interval(
    a: ArrayLike, b: ArrayLike, v_a: ArrayLike, v_b: ArrayLike, cov_ab: ArrayLike, crit: ArrayLike
) -> tuple[ArrayLike, ArrayLike]:
    """Fieller's interval for the ratio ``a / b`` of two (possibly correlated) normal estimates.

    The set ``{r : (a - r b)^2 <= crit^2 (v_a - 2 r cov_ab + r^2 v_b)}``. Why Fieller and not the
    delta method: the set contains r = 1 exactly when the absolute-scale test of ``a - b`` does not
    reject at the same critical value, so the relative interval and the decision never disagree,
    and it stays honest when ``b`` is noisy (it widens, up to unbounded, instead of pretending to be
    symmetric). Returns ``(-inf, inf)`` where ``b`` is not distinguishable from 0 at ``crit`` (the
    set is then unbounded: no finite relative interval exists).
    """
    k2 = np.square(crit)
    qa = np.square(b) - k2 * v_b
    qb = a * b - k2 * cov_ab
    qc = np.square(a) - k2 * v_a
    if all(np.ndim(x) == 0 for x in (qa, qb, qc)):  # one comparison: plain floats (the readout's hot path)
        if not qa > 0:
            return -np.inf, np.inf
        root = float(np.sqrt(max(qb * qb - qa * qc, 0.0)))
        return float((qb - root) / qa), float((qb + root) / qa)
    with np.errstate(invalid="ignore", divide="ignore"):
        root = np.sqrt(np.maximum(np.square(qb) - qa * qc, 0.0))
        bounded = qa > 0
        lo = np.where(bounded, (qb - root) / np.where(bounded, qa, 1.0), -np.inf)
        hi = np.where(bounded, (qb + root) / np.where(bounded, qa, 1.0), np.inf)
    return lo, hi


def welch_df(v_t: ArrayLike, n_t: ArrayLike, v_c: ArrayLike, n_c: ArrayLike) -> ArrayLike:
    """Welch-Satterthwaite degrees of freedom from the estimator variances v = s^2 / n
    (inf, i.e. a z-test, where both variances are 0 and the formula is 0/0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.square(v_t + v_c) / (np.square(v_t) / (n_t - 1) + np.square(v_c) / (n_c - 1))
    return np.where(np.isfinite(df), df, np.inf) if np.ndim(df) else (float(df) if np.isfinite(df) else np.inf)


@dataclass(frozen=True)
class TestResult:
    estimate: float
    se: float
    statistic: float
    p_value: float
    ci: tuple[float, float]
    df: float


def critical_value(df: ArrayLike, alpha: float = 0.05) -> ArrayLike:
    """Two-sided critical value of Student's t with ``df`` degrees of freedom (normal for inf)."""
    df_arr = np.asarray(df, dtype=np.float64)
    # scipy.special ufuncs: the same functions as scipy.stats' t and norm, ~100x less overhead per call
    out = np.where(np.isinf(df_arr), special.ndtri(1 - alpha / 2), special.stdtrit(np.where(np.isinf(df_arr), 1.0, df_arr), 1 - alpha / 2))
    return float(out) if out.ndim == 0 else out


def t_test(estimate: ArrayLike, variance: ArrayLike, df: ArrayLike = np.inf, alpha: float = 0.05, null: float = 0.0):
    """Two-sided t-test (z-test when df is inf): statistic, p-value, (1 - alpha) interval.

    Returns a ``TestResult`` for scalars and a tuple of arrays
    ``(statistic, p_value, lower, upper)`` for arrays.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(variance)
        stat = (estimate - null) / se
    df_arr = np.asarray(df, dtype=np.float64)
    dist_p = np.where(np.isinf(df_arr), 2 * special.ndtr(-np.abs(stat)), 2 * special.stdtr(np.where(np.isinf(df_arr), 1.0, df_arr), -np.abs(stat)))
    crit = critical_value(df_arr, alpha)
    lo, hi = estimate - crit * se, estimate + crit * se
    if np.ndim(estimate) == 0 and np.ndim(variance) == 0 and np.ndim(df) == 0:
        return TestResult(float(estimate), float(se), float(stat), float(dist_p), (float(lo), float(hi)), float(df))
    return stat, dist_p, lo, hi


def welch_t_test(t: Estimate, c: Estimate, alpha: float = 0.05, relative: bool = False) -> TestResult:
    """Welch's t-test of treatment vs control on the absolute or relative scale."""
    if relative:
        est, var = relative_lift(t.value, t.variance, c.value, c.variance)
    else:
        est, var = absolute_lift(t.value, t.variance, c.value, c.variance)
    df = welch_df(t.variance, t.n, c.variance, c.n)
    return t_test(est, var, df, alpha)


# ---------------------------------------------------------------------------------------------
# Sample ratio mismatch
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SRMResult:
    counts: tuple[int, ...]
    expected: tuple[float, ...]
    chi2: float
    p_value: float
    threshold: float
    passed: bool = field(default=True)


def srm_test(counts: Sequence[int], weights: Sequence[float], threshold: float = 0.001) -> SRMResult:
    """Chi-square goodness of fit of the observed units per variant to the configured weights."""
    obs = np.asarray(counts, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    exp = obs.sum() * w / w.sum()
    if obs.sum() == 0:
        return SRMResult(tuple(int(c) for c in obs), tuple(exp.tolist()), 0.0, 1.0, threshold, True)
    chi2 = float(np.sum(np.square(obs - exp) / exp))
    p = float(sps.chi2.sf(chi2, obs.size - 1))
    return SRMResult(tuple(int(c) for c in obs), tuple(float(e) for e in exp), chi2, p, threshold, p >= threshold)


# ---------------------------------------------------------------------------------------------
# Winsorization
# ---------------------------------------------------------------------------------------------


def winsor_bounds(values: np.ndarray, upper: float | None = None, lower: float | None = None, nonzero_only: bool = False) -> tuple[float, float]:
    """Capping bounds at the given percentiles (fractions), optionally of the non-zero values only."""
    v = np.asarray(values, dtype=np.float64)
    if nonzero_only:
        v = v[v != 0]
    if v.size == 0:
        return -np.inf, np.inf
    lo = float(np.quantile(v, lower)) if lower is not None else -np.inf
    hi = float(np.quantile(v, upper)) if upper is not None else np.inf
    return lo, hi


def winsorize(values: np.ndarray, upper: float | None = None, lower: float | None = None, nonzero_only: bool = False) -> np.ndarray:
    """Cap values at the percentiles; with ``nonzero_only`` zeros stay zero."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = winsor_bounds(v, upper, lower, nonzero_only)
    out = np.clip(v, lo, hi)
    if nonzero_only:
        out = np.where(v == 0, 0.0, out)
    return out
