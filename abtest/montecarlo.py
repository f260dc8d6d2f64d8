"""Monte-Carlo validation of the readout through its production path.

Raw per-user draws are generated in numpy (many simulated experiments at once) and reduced to
per-arm sums and cross products; every simulated experiment then goes through the same
``Moments.from_sums`` -> ``comparison.compare`` (-> ``metric_estimate``, ``pooled_theta``,
``welch_t_test`` math, Fieller, mSPRT) that the readout runs on logged events. Used by
benchmarks/abtest_validity.py (full tables) and tests/unit/test_abtest_validation.py (small runs).

The marketplace: per user an activity level drives impressions in both periods, a click
probability ~ Beta(2, 38), a buying propensity ~ Beta(0.5, 4.5) (mean 0.1 per period) and a spending
level, all three shared by both periods (what CUPED exploits);
GMV per buyer is log-normal with log-sd 2 (heavy tail). A treatment multiplies the click
probability and the order values by ``1 + lift``, so CTR, GMV per user and AOV all move by ``lift``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from abtest import stats
from abtest.comparison import Comparison, compare
from abtest.config import BUILTIN_METRICS, Analysis

COLUMNS = ("impressions", "clicks", "orders", "gmv", "pre_impressions", "pre_clicks", "pre_orders", "pre_gmv")
METRICS = ("gmv_per_user", "ctr", "aov")


def draw_units(rng: np.random.Generator, sims: int, n: int, lift: float = 0.0, buy_rate: float = 0.1, sigma: float = 2.0) -> np.ndarray:
    """Per-user columns (``COLUMNS``) of one arm in ``sims`` experiments: shape (sims, n, 8)."""
    shape = (sims, n)
    activity = rng.lognormal(0.0, 0.5, shape)
    p_click = rng.beta(2.0, 38.0, shape)
    spend = rng.lognormal(0.0, 1.0, shape)  # shared by both periods: what CUPED exploits
    propensity = rng.beta(0.5 * buy_rate / 0.1, 0.5 * (1 - buy_rate) / 0.1, shape)
    per_order_sd = np.sqrt(sigma**2 - 1.0)
    out = np.empty((sims, n, len(COLUMNS)))
    for k, mult in ((0, 1.0 + lift), (4, 1.0)):  # post period (treated), pre period
        imp = rng.poisson(8.0 * activity) + 1.0
        clicks = rng.binomial(imp.astype(np.int64), np.minimum(p_click * mult, 1.0))
        orders = (rng.random(shape) < propensity) * (1.0 + rng.poisson(0.3, shape))
        gmv = orders * spend * rng.lognormal(0.0, per_order_sd, shape) * mult
        out[..., k], out[..., k + 1], out[..., k + 2], out[..., k + 3] = imp, clicks, orders, gmv
    return out


def winsorize_pooled(c: np.ndarray, t: np.ndarray, upper: float = 0.995) -> None:
    """In place: cap gmv and pre_gmv of each simulated experiment at the pooled non-zero percentile
    (``stats.winsor_bounds``, as ``aggregate.winsorize_units`` does on logged events; the default cap is
    the readout's default, ``config.Winsorize.upper``)."""
    for col in (COLUMNS.index("gmv"), COLUMNS.index("pre_gmv")):
        for s in range(c.shape[0]):
            _, hi = stats.winsor_bounds(np.concatenate([c[s, :, col], t[s, :, col]]), upper=upper, nonzero_only=True)
            np.minimum(c[s, :, col], hi, out=c[s, :, col])
            np.minimum(t[s, :, col], hi, out=t[s, :, col])


def moments(z: np.ndarray) -> list[stats.Moments]:
    """One ``Moments`` per simulated experiment from its (n, k) per-user block."""
    sums = z.sum(axis=1)
    cross = np.einsum("snk,snl->skl", z, z)
    nonzero = np.count_nonzero(z, axis=1)
    return [stats.Moments.from_sums(z.shape[1], COLUMNS, sums[s], cross[s], nonzero[s]) for s in range(z.shape[0])]


@dataclass(frozen=True)
class Run:
    """Comparisons of every simulated experiment: ``rows[metric][cuped]`` -> list of Comparison."""

    rows: dict[str, dict[bool, list[Comparison]]]
    lift: float
    true_lift: dict[str, float]
    """The lift each interval should cover (the winsorized estimand when capped; ``lift`` otherwise)."""


def run_fixed(seed: int, sims: int, n: int, lift: float, winsorize: bool, analysis: Analysis | None = None,
              chunk: int = 100, metrics: tuple[str, ...] = METRICS) -> Run:
    """``sims`` fixed-horizon experiments of ``n`` users per arm through ``compare``, with and without CUPED."""
    rng = np.random.default_rng(seed)
    plain = analysis or Analysis(min_units_per_arm=2, min_nonzero_per_arm=0)
    variants = {True: plain, False: plain.model_copy(update={"cuped": False})}
    rows: dict[str, dict[bool, list[Comparison]]] = {m: {True: [], False: []} for m in metrics}
    level = {m: [0.0, 0.0] for m in metrics}
    for start in range(0, sims, chunk):
        r = min(chunk, sims - start)
        c, t = draw_units(rng, r, n), draw_units(rng, r, n, lift)
        if winsorize:
            winsorize_pooled(c, t)
        for mc, mt in zip(moments(c), moments(t)):
            for m in metrics:
                d = BUILTIN_METRICS[m]
                for cuped, a in variants.items():
                    rows[m][cuped].append(compare({"control": mc, "treatment": mt}, d, "control", "treatment", a))
                est_c = stats.metric_estimate(mc, d.kind, d.columns).value
                est_t = stats.metric_estimate(mt, d.kind, d.columns).value
                level[m][0] += est_c
                level[m][1] += est_t
    # winsorized GMV has its own estimand: the lift of the capped means (ratio of the averages over runs)
    true = {m: (level[m][1] / level[m][0] - 1.0) if winsorize and m != "ctr" else lift for m in metrics}
    return Run(rows, lift, true)


def run_sequential(seed: int, sims: int, per_day: int, days: int = 14, metric: str = "gmv_per_user",
                   analysis: Analysis | None = None, chunk: int = 100) -> np.ndarray:
    """A/A experiments read daily with the always-valid p-value: (sims, days) running-minimum p-values."""
    rng = np.random.default_rng(seed)
    a = analysis or Analysis(min_units_per_arm=2, min_nonzero_per_arm=0, cuped=False)
    d = BUILTIN_METRICS[metric]
    out = np.ones((sims, days))
    for start in range(0, sims, chunk):
        r = min(chunk, sims - start)
        arms = []
        for _ in range(2):
            z = draw_units(rng, r * days, per_day).reshape(r, days, per_day, len(COLUMNS))
            arms.append((np.cumsum(z.sum(2), 1), np.cumsum(np.einsum("sdnk,sdnl->sdkl", z, z), 1),
                         np.cumsum(np.count_nonzero(z, axis=2), 1)))
        for s in range(r):
            for day in range(days):
                n = per_day * (day + 1)
                mc, mt = (stats.Moments.from_sums(n, COLUMNS, sm[s, day], cr[s, day], nz[s, day]) for sm, cr, nz in arms)
                out[start + s, day] = compare({"c": mc, "t": mt}, d, "c", "t", a).seq_p_value
    return np.minimum.accumulate(out, axis=1)


def rate(hits: np.ndarray) -> tuple[float, float]:
    """A proportion and its Monte-Carlo standard error."""
    p = float(np.mean(hits))
    return p, float(np.sqrt(p * (1 - p) / max(len(hits), 1)))


def rejections(rows: list[Comparison], alpha: float = 0.05) -> np.ndarray:
    return np.array([c.p_value < alpha for c in rows])


def covered(rows: list[Comparison], true_lift: float) -> np.ndarray:
    return np.array([c.rel_ci[0] <= true_lift <= c.rel_ci[1] for c in rows])


__all__ = ["COLUMNS", "METRICS", "Run", "covered", "draw_units", "moments", "rate", "rejections", "run_fixed", "run_sequential"]
