"""One metric, one treatment against control: every statistic of the readout, and why it is valid.

Inference choices (and where they depart from GrowthBook's gbstats):

* **The decision is taken on the absolute scale**: Welch's t-test of ``T - C`` (gbstats tests the
  relative lift with a delta-method variance). The delta-method relative test is invalid on
  heavy-tailed GMV at small samples (A/A false positives well above alpha: the control mean in the
  denominator is noisy and correlated with its own variance estimate); the absolute test is not.
* **Relative intervals are Fieller intervals** at the same critical value: they contain 0 exactly
  when the absolute test does not reject (interval and decision never disagree), widen honestly
  when the control mean is noisy, are unbounded when it is indistinguishable from 0, and are
  floored at -100% (the per-unit columns are non-negative, so a lift below -100% is impossible).
  ``rel_se`` stays the delta-method standard error (gbstats's ``uplift.stddev``).
* **CUPED relative lift**: ``cuped_relative="gbstats"`` (default) is gbstats's
  ``(adj_T - adj_C) / plain_C``; ``"ratio"`` is ``adj_T / adj_C - 1``. CUPED falls back to the plain
  estimate per metric when the covariate has no variance or the adjusted value is not finite, and
  says so in ``reasons``.
* **The mSPRT runs on the absolute scale** (its guarantee needs a normal estimate with a known
  variance; the relative lift's ratio is far from normal on day 1). The relative confidence
  sequence is the Fieller set at the sequence's critical value.
* **Minimum-sample rule**: no decision before each arm has ``min_units_per_arm`` units and
  ``min_nonzero_per_arm`` units with a non-zero numerator.
* **Degenerate arms** (fewer than 2 units, a zero denominator, no variance, a zero control mean)
  never raise: the comparison gets ``status`` "not computable" (or "not enough data") and a reason,
  p = 1 (as gbstats does), and NaN only where a number does not exist (JSON null, "n/a" in the report).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from scipy import special

from abtest import stats
from abtest.config import Analysis, MetricDef

NAN = float("nan")


@dataclass
class Comparison:
    """One metric, one treatment variant against control."""

    metric: str
    label: str
    kind: str
    variant: str
    control: str
    n_treatment: int
    n_control: int
    control_value: float
    """The value the test uses: CUPED-adjusted when ``cuped``."""
    treatment_value: float
    control_unadjusted: float
    treatment_unadjusted: float
    abs_lift: float
    abs_ci: tuple[float, float]
    abs_p_value: float
    rel_lift: float
    rel_se: float
    rel_ci: tuple[float, float]
    p_value: float
    """The decision's p-value: Welch's test on the absolute scale (= ``abs_p_value``)."""
    df: float
    cuped: bool
    theta: float
    variance_reduction: float
    """1 - v(CUPED) / v(plain) of the absolute lift (0 without CUPED)."""
    seq_p_value: float
    seq_ci: tuple[float, float]
    chance_to_beat_control: float
    expected_loss_treatment: float
    expected_loss_control: float
    posterior_mean: float
    credible_interval: tuple[float, float]
    raw_rel_lift: float = NAN
    raw_rel_ci: tuple[float, float] = (NAN, NAN)
    """The plain (not CUPED-adjusted) relative lift and interval, shown apart from the adjusted ones."""
    mde: float = NAN
    """Relative minimum detectable effect at the current sample (two-sided alpha, ``power``)."""
    users_needed_per_arm: float = NAN
    """Users per arm to detect ``target_lift`` with ``power`` (at the current per-unit variances)."""
    status: str = "ok"
    """ok | not enough data | not computable."""
    reasons: list[str] = field(default_factory=list)
    role: str = "metric"
    """metric | guardrail | segment."""
    segment: str | None = None
    """"dimension=value" for a segment breakdown cell."""
    margin: float | None = None
    higher_is_better: bool = True
    p_adjusted: float = NAN
    decision: str = ""
    sequential_decision: str = ""
    true_rel_lift: float | None = None

    @property
    def users_more_per_arm(self) -> int:
        if not math.isfinite(self.users_needed_per_arm):
            return 0
        return max(0, math.ceil(self.users_needed_per_arm - min(self.n_treatment, self.n_control)))


def _relative(a: float, b: float, v_a: float, v_b: float, cov_ab: float, crit: float) -> tuple[float, tuple[float, float]]:
    """``a / b - 1`` and its Fieller interval (floored at -100%); NaN where b is 0."""
    if b == 0 or not all(math.isfinite(x) for x in (a, b, v_a, v_b, cov_ab, crit)):
        return NAN, (NAN, NAN)
    lo, hi = stats.fieller_interval(a, b, v_a, v_b, cov_ab, crit)
    return a / b - 1.0, (max(lo - 1.0, -1.0), hi - 1.0)


def _cuped(arms, metric: MetricDef, control: str, variant: str, reasons: list[str]):
    """Adjusted estimates for both arms, or None (plain) with the reason."""
    mc, mt = arms[control], arms[variant]
    cols, cov_cols = metric.columns, tuple(f"pre_{c}" for c in metric.columns)
    if not all(c in mc.names and c in mt.names for c in cov_cols):
        reasons.append("CUPED off: no pre-period columns")
        return None
    theta, pool = stats.pooled_theta([mc, mt], metric.kind, cols, cov_cols)
    if theta == 0.0 or not (math.isfinite(theta) and math.isfinite(pool)):
        reasons.append("CUPED off: the pre-period covariate has no variance (no pre-period data)")
        return None
    est_c = stats.metric_estimate(mc, metric.kind, cols, cov_cols, theta, pool)
    est_t = stats.metric_estimate(mt, metric.kind, cols, cov_cols, theta, pool)
    if not all(math.isfinite(x) for x in (est_c.value, est_t.value, est_c.variance, est_t.variance)):
        reasons.append("CUPED off: the adjusted estimate is not finite (an arm has no pre-period denominator)")
        return None
    return est_c, est_t, theta, cov_cols


def _not_computable(arms, metric: MetricDef, control: str, variant: str) -> str | None:
    mc, mt = arms[control], arms[variant]
    for name, m in ((control, mc), (variant, mt)):
        if m.n < 2:
            return f"{name} has {m.n} unit(s); at least 2 per arm are needed"
        if metric.kind == "ratio" and m.mean[m.index(metric.columns[1])] == 0:
            return f"{name} has no {metric.columns[1]}: {metric.name} is undefined there"
    return None


def compare(arms: dict[str, stats.Moments], metric: MetricDef, control: str, variant: str, a: Analysis) -> Comparison:
    """All statistics of one metric for one treatment against control, from per-arm Moments."""
    mc, mt = arms[control], arms[variant]
    reasons: list[str] = []
    base = dict(metric=metric.name, label=metric.label or metric.name, kind=metric.kind, variant=variant, control=control,
                n_treatment=mt.n, n_control=mc.n, higher_is_better=metric.higher_is_better)
    broken = _not_computable(arms, metric, control, variant)
    if broken:
        plain = [stats.metric_estimate(m, metric.kind, metric.columns).value if m.n else NAN for m in (mc, mt)]
        return Comparison(**base, control_value=plain[0], treatment_value=plain[1], control_unadjusted=plain[0],
                          treatment_unadjusted=plain[1], abs_lift=NAN, abs_ci=(NAN, NAN), abs_p_value=1.0, rel_lift=NAN,
                          rel_se=NAN, rel_ci=(NAN, NAN), p_value=1.0, df=NAN, cuped=False, theta=0.0, variance_reduction=0.0,
                          seq_p_value=1.0, seq_ci=(NAN, NAN), chance_to_beat_control=NAN, expected_loss_treatment=NAN,
                          expected_loss_control=NAN, posterior_mean=NAN, credible_interval=(NAN, NAN),
                          status="not computable", reasons=[broken])

    cols = metric.columns
    plain_c, plain_t = stats.metric_estimate(mc, metric.kind, cols), stats.metric_estimate(mt, metric.kind, cols)
    adjusted = _cuped(arms, metric, control, variant, reasons) if a.cuped and a.pre_period_days > 0 else None
    est_c, est_t, theta, cov_cols = adjusted if adjusted else (plain_c, plain_t, 0.0, None)
    v = est_t.variance + est_c.variance
    diff = est_t.value - est_c.value
    df = stats.welch_df(est_t.variance, mt.n, est_c.variance, mc.n)
    crit = stats.critical_value(df, a.alpha)
    if v > 0:
        test = stats.t_test(diff, v, df, a.alpha)
        p, abs_ci = test.p_value, test.ci
    else:
        p, abs_ci = 1.0, (diff, diff)
        reasons.append("no variance in either arm: every unit has the same value; no test is possible")

    # relative lift: Fieller, on gbstats's definition or the ratio of adjusted means
    cu, tu = plain_c.value, plain_t.value
    if cu == 0:
        reasons.append("the control mean is 0: a relative lift does not exist (the absolute lift is reported)")
    raw_rel, raw_ci = _relative(tu, cu, plain_t.variance, plain_c.variance, 0.0,
                                stats.critical_value(stats.welch_df(plain_t.variance, mt.n, plain_c.variance, mc.n), a.alpha))
    if adjusted and a.cuped_relative == "gbstats":
        # (plain_C + adjusted difference) / plain_C: numerator and denominator share the control arm
        c_ap = stats.adjusted_plain_covariance(mc, metric.kind, cols, cov_cols, theta)
        num, v_num, den, v_den, cov_nd = cu + diff, plain_c.variance + v - 2 * c_ap, cu, plain_c.variance, plain_c.variance - c_ap
        rel_var = stats.relative_lift(tu, est_t.variance, cu, est_c.variance)[1] if cu else NAN
    else:
        num, v_num, den, v_den, cov_nd = est_t.value, est_t.variance, est_c.value, est_c.variance, 0.0
        rel_var = stats.relative_lift(num, v_num, den, v_den)[1] if den else NAN
    rel, rel_ci = _relative(num, den, v_num, v_den, cov_nd, crit)
    if not adjusted:
        raw_rel, raw_ci = rel, rel_ci

    # sequential: mSPRT on the absolute scale; relative confidence sequence by Fieller at its critical value
    seq_p, seq_ci = 1.0, (NAN, NAN)
    if v > 0:
        tau2 = float(stats.tau2_for_horizon(v, mt.n + mc.n, a.sequential.tuning_n, a.alpha))
        seq_p = float(stats.msprt_pvalue(diff, v, tau2))
        k_seq = float(stats.msprt_halfwidth(v, tau2, a.alpha)) / math.sqrt(v)
        seq_ci = _relative(num, den, v_num, v_den, cov_nd, k_seq)[1]

    bayes = None
    if math.isfinite(rel_var) and rel_var > 0 and math.isfinite(rel):
        bayes = stats.bayes_readout(rel, rel_var, a.bayes.prior_mean, a.bayes.prior_sd, a.bayes.proper, a.alpha)

    # power: the minimum detectable effect now, and the users per arm the target effect needs
    z = special.ndtri(1 - a.alpha / 2) + special.ndtri(a.power)
    mde = z * math.sqrt(v) / abs(cu) if cu and v > 0 else NAN
    per_unit = est_t.variance * mt.n + est_c.variance * mc.n
    needed = z * z * per_unit / (a.target_lift * cu) ** 2 if cu and per_unit > 0 else NAN

    status = "ok" if v > 0 else "not computable"
    if status == "ok":
        short = [f"{name}: {m.n} units (< {a.min_units_per_arm})" for name, m in ((control, mc), (variant, mt)) if m.n < a.min_units_per_arm]
        short += [f"{name}: {m.count_nonzero(cols[0])} units with {cols[0]} > 0 (< {a.min_nonzero_per_arm})"
                  for name, m in ((control, mc), (variant, mt)) if m.count_nonzero(cols[0]) < a.min_nonzero_per_arm]
        if short:
            status = "not enough data"
            reasons.append("minimum sample not reached: " + "; ".join(short))

    hib = metric.higher_is_better
    return Comparison(
        **base,
        control_value=est_c.value, treatment_value=est_t.value, control_unadjusted=cu, treatment_unadjusted=tu,
        abs_lift=diff, abs_ci=abs_ci, abs_p_value=p, rel_lift=rel, rel_se=math.sqrt(rel_var) if rel_var >= 0 else NAN,
        rel_ci=rel_ci, p_value=p, df=float(df), cuped=adjusted is not None, theta=theta,
        variance_reduction=1.0 - v / (plain_t.variance + plain_c.variance) if adjusted and plain_t.variance + plain_c.variance > 0 else 0.0,
        seq_p_value=seq_p, seq_ci=seq_ci,
        chance_to_beat_control=NAN if bayes is None else (bayes.chance_to_beat_control if hib else 1 - bayes.chance_to_beat_control),
        expected_loss_treatment=NAN if bayes is None else (bayes.expected_loss_treatment if hib else bayes.expected_loss_control),
        expected_loss_control=NAN if bayes is None else (bayes.expected_loss_control if hib else bayes.expected_loss_treatment),
        posterior_mean=NAN if bayes is None else bayes.mean,
        credible_interval=(NAN, NAN) if bayes is None else bayes.credible_interval,
        raw_rel_lift=raw_rel, raw_rel_ci=raw_ci, mde=mde, users_needed_per_arm=needed, status=status, reasons=reasons,
    )


def decide(c: Comparison, p: float, alpha: float, valid: bool) -> str:
    """The decision of one comparison at ``p`` (adjusted for multiplicity, or the sequential p)."""
    if not valid:
        return "invalid (SRM)"
    if c.status != "ok":
        return c.status
    if c.role == "guardrail":
        return guardrail_decision(c)
    if not p < alpha:
        return "inconclusive"
    return "significant improvement" if (c.abs_lift > 0) == c.higher_is_better else "significant regression"


def guardrail_decision(c: Comparison) -> str:
    """Non-inferiority at ``margin``: the interval's bad-side bound must stay within the margin.

    "harm" when the interval lies wholly on the bad side of 0 (a significant regression)."""
    lo, hi = c.rel_ci
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "not yet shown non-inferior"
    bad_bound, harm = (lo, hi < 0) if c.higher_is_better else (-hi, lo > 0)
    if harm:
        return "harm"
    return "non-inferior" if bad_bound > -(c.margin or 0.0) else "not yet shown non-inferior"


__all__ = ["Comparison", "compare", "decide", "guardrail_decision"]
