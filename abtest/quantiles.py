"""Quantile metrics (p50 / p90 order value) with intervals that stay valid when users order repeatedly.

Orders of one user are correlated, so order-level bootstraps or binomial order-statistic intervals
are too narrow. Following Deng, Knoblich & Lu (2018, "Applying the Delta Method in Metric
Analytics", KDD), per arm:

1. ``q`` = the empirical p-quantile of the order values;
2. ``F(q) = sum_u S_u / sum_u N_u`` (S_u: the unit's orders at or below q, N_u: its orders) is a ratio
   of per-unit means, so its variance is the delta-method ``sigma^2`` of the readout's ratio metrics;
3. the interval of q is ``[Q(p - z sigma), Q(p + z sigma)]`` (order statistics), and its standard
   error ``(upper - lower) / (2 z)``.

Between arms: ``q_T - q_C`` with a z-test on those standard errors, and the relative lift's
interval by Fieller (as for the other metrics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl
from scipy import special

from abtest import stats
from abtest.events import PURCHASE

NAN = float("nan")


@dataclass(frozen=True)
class QuantileEstimate:
    value: float
    ci: tuple[float, float]
    se: float
    n_units: int
    n_values: int


@dataclass
class QuantileComparison:
    name: str
    q: float
    variant: str
    control: str
    control_value: float
    treatment_value: float
    abs_lift: float
    abs_ci: tuple[float, float]
    p_value: float
    rel_lift: float
    rel_ci: tuple[float, float]
    n_orders: tuple[int, int]
    status: str = "ok"
    reason: str = ""


def quantile_estimate(values: np.ndarray, units: np.ndarray, q: float, alpha: float = 0.05) -> QuantileEstimate:
    """The p-quantile of ``values`` (one row per order, ``units`` its unit ids) with its clustered interval."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return QuantileEstimate(NAN, (NAN, NAN), NAN, 0, int(values.size))
    order = np.sort(values)
    est = float(np.quantile(values, q))
    _, idx = np.unique(np.asarray(units), return_inverse=True)
    n_units = int(idx.max()) + 1
    below = np.bincount(idx, weights=(values <= est).astype(np.float64), minlength=n_units)
    count = np.bincount(idx, minlength=n_units).astype(np.float64)
    m = stats.Moments.from_array(["s", "n"], np.column_stack([below, count]))
    p_hat = float(m.mean[0] / m.mean[1])
    sigma = math.sqrt(max(float(stats.ratio_variance(m.mean[0], m.mean[1], m.cov[0, 0], m.cov[1, 1], m.cov[0, 1], m.n)), 0.0))
    z = float(special.ndtri(1 - alpha / 2))
    n = order.size

    def at(p: float) -> float:
        return float(order[min(max(int(math.ceil(n * p)) - 1, 0), n - 1)])

    lo, hi = at(p_hat - z * sigma), at(p_hat + z * sigma)
    return QuantileEstimate(est, (lo, hi), (hi - lo) / (2 * z), n_units, n)


def compare_quantiles(name: str, q: float, control: str, variant: str, c: QuantileEstimate, t: QuantileEstimate,
                      alpha: float = 0.05, min_values: int = 30) -> QuantileComparison:
    base = dict(name=name, q=q, variant=variant, control=control, n_orders=(c.n_values, t.n_values))
    if min(c.n_values, t.n_values) < min_values:
        return QuantileComparison(**base, control_value=c.value, treatment_value=t.value, abs_lift=NAN, abs_ci=(NAN, NAN), p_value=1.0,
                                  rel_lift=NAN, rel_ci=(NAN, NAN), status="not enough data",
                                  reason=f"fewer than {min_values} orders in an arm ({c.n_values} / {t.n_values})")
    v = c.se**2 + t.se**2
    diff = t.value - c.value
    z = float(special.ndtri(1 - alpha / 2))
    p = float(2 * special.ndtr(-abs(diff) / math.sqrt(v))) if v > 0 else 1.0
    rel, rel_ci = NAN, (NAN, NAN)
    if c.value > 0:
        lo, hi = stats.fieller_interval(t.value, c.value, t.se**2, c.se**2, 0.0, z)
        rel, rel_ci = t.value / c.value - 1, (max(lo - 1, -1.0), hi - 1)
    return QuantileComparison(**base, control_value=c.value, treatment_value=t.value, abs_lift=diff,
                              abs_ci=(diff - z * math.sqrt(v), diff + z * math.sqrt(v)), p_value=p, rel_lift=rel, rel_ci=rel_ci,
                              status="ok" if v > 0 else "not computable", reason="" if v > 0 else "no spread in the order values")


def order_values(outcomes: pl.LazyFrame, units: pl.DataFrame, start: datetime | None, end: datetime | None) -> pl.DataFrame:
    """(unit_id, variant, value) of every purchase in the window after the unit's first exposure."""
    outs = outcomes.filter(pl.col("event") == PURCHASE)
    if start is not None:
        outs = outs.filter(pl.col("ts") >= start)
    if end is not None:
        outs = outs.filter(pl.col("ts") < end)
    return (outs.join(units.lazy().select("unit_id", "variant", "first_exposure"), on="unit_id", how="inner")
            .filter(pl.col("ts") >= pl.col("first_exposure")).select("unit_id", "variant", "value").collect())


def quantile_readout(outcomes: pl.LazyFrame, units: pl.DataFrame, start, end, quantiles: list[float], control: str,
                     variants: list[str], alpha: float) -> list[QuantileComparison]:
    orders = order_values(outcomes, units, start, end)
    per_arm = {v: orders.filter(pl.col("variant") == v) for v in variants}
    out = []
    for q in quantiles:
        est = {v: quantile_estimate(f.get_column("value").to_numpy(), f.get_column("unit_id").to_numpy(), q, alpha) for v, f in per_arm.items()}
        for v in variants:
            if v != control:
                out.append(compare_quantiles(f"order_value_p{round(q * 100):d}", q, control, v, est[control], est[v], alpha))
    return out


__all__ = ["QuantileComparison", "QuantileEstimate", "compare_quantiles", "order_values", "quantile_estimate", "quantile_readout"]
