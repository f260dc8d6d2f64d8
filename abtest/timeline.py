"""The effect over time: cumulative and daily lifts, and a novelty check.

* cumulative: each look uses the data up to that day (fixed-horizon CI, the always-valid confidence
  sequence as a running intersection, the always-valid p-value as a running minimum);
* daily: the lift on that day's activity alone (units active that day), to see an effect move;
* novelty check (mean metrics): per unit ``d = value in the second half - value in the first half``
  of the window, compared between arms with the same Welch test. Randomisation makes the arms'
  ``d`` comparable, so a significant difference says the effect changed over time (a novelty
  effect that wears off, or a learning effect that grows), not that the users did.

polars computes the (unit, day) increments once; the per-day totals are then running sums in numpy
(one pass per day over that day's rows), winsorized and reduced to ``Moments``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import polars as pl

from abtest import stats
from abtest.aggregate import PRE_COLUMNS, daily_unit_increments
from abtest.comparison import compare
from abtest.config import Experiment, ExperimentsConfig

VALUE_COLUMNS = ("requests", "impressions", "clicks", "orders", "gmv")
NAN = float("nan")


@dataclass
class TimelinePoint:
    day: int
    metric: str
    variant: str
    n: int
    rel_lift: float
    ci: tuple[float, float]
    seq_ci: tuple[float, float]
    seq_p_value: float
    daily_rel_lift: float = NAN
    daily_ci: tuple[float, float] = (NAN, NAN)


@dataclass
class NoveltyCheck:
    """Did the effect change between the first and the second half of the window?"""

    metric: str
    variant: str
    early_days: tuple[int, int]
    late_days: tuple[int, int]
    early_lift: float
    late_lift: float
    change_p_value: float
    changed: bool
    note: str = field(default="")


def _arms(z: np.ndarray, variants: np.ndarray, vnames: list[str], names: list[str]) -> dict[str, stats.Moments]:
    return {vnames[i]: stats.Moments.from_array(names, z[variants == i]) for i in range(len(vnames)) if np.any(variants == i)}


def _novelty(early: np.ndarray, late: np.ndarray, variants: np.ndarray, e: Experiment, config: ExperimentsConfig,
             days: int) -> list[NoveltyCheck]:
    """Welch test of (late - early) per unit between arms, for each mean metric of the experiment."""
    metrics = config.metric_defs
    half = days // 2
    out = []
    vnames = [x.name for x in e.variants]
    ctrl = vnames.index(e.control)
    for mname in e.metrics:
        m = metrics[mname]
        if m.kind != "mean" or m.column not in (*VALUE_COLUMNS, "converted"):
            continue
        k = (*VALUE_COLUMNS, "converted").index(m.column)
        for vi, v in enumerate(vnames):
            if vi == ctrl:
                continue
            c_e, t_e, c_l, t_l = early[variants == ctrl, k], early[variants == vi, k], late[variants == ctrl, k], late[variants == vi, k]
            if min(c_e.size, t_e.size) < 2:
                continue
            d_c, d_t = c_l - c_e, t_l - t_e
            v_c, v_t = d_c.var(ddof=1) / d_c.size, d_t.var(ddof=1) / d_t.size
            lift = lambda t, c: t.mean() / c.mean() - 1 if c.mean() else NAN  # noqa: E731
            if v_c + v_t <= 0:
                continue
            test = stats.t_test(d_t.mean() - d_c.mean(), v_c + v_t, stats.welch_df(v_t, d_t.size, v_c, d_c.size), e.analysis.alpha)
            early_lift, late_lift = lift(t_e, c_e), lift(t_l, c_l)
            changed = test.p_value < e.analysis.alpha
            note = ""
            if changed:
                kind = "novelty effect (the lift shrank)" if abs(late_lift) < abs(early_lift) else "the lift grew (learning effect)"
                note = (f"{mname}: {kind}: {early_lift:+.1%} on days 1-{half} vs {late_lift:+.1%} on days {half + 1}-{days} "
                        f"(p = {test.p_value:.3g}); read the late lift as the lasting one")
            out.append(NoveltyCheck(mname, v, (1, half), (half + 1, days), early_lift, late_lift, test.p_value, changed, note))
    return out


def daily_timeline(exposures: pl.LazyFrame, outcomes: pl.LazyFrame, units: pl.DataFrame, e: Experiment, config: ExperimentsConfig,
                   start: datetime, end: datetime | None) -> tuple[list[TimelinePoint], list[NoveltyCheck]]:
    """Cumulative and daily lift per day and metric, and the novelty check (see the module docstring)."""
    a = e.analysis
    side = units.select("unit_id", "variant", *[c for c in PRE_COLUMNS if c in units.columns]).with_row_index("__idx")
    incr = (
        daily_unit_increments(exposures, outcomes, e.name, start, end, units.select("unit_id", "first_exposure"))
        .join(side.lazy().select("unit_id", "__idx"), on="unit_id", how="inner")
        .sort("day")
        .collect(engine="streaming")
    )
    if incr.height == 0:
        return [], []
    n = side.height
    pre_cols = [c for c in PRE_COLUMNS if c in side.columns]
    pre = side.select(pre_cols).to_numpy().astype(np.float64) if pre_cols else np.zeros((n, 0))
    vnames = [x.name for x in e.variants]
    variants = side.get_column("variant").replace_strict({v: i for i, v in enumerate(vnames)}, default=-1, return_dtype=pl.Int32).to_numpy()
    idx_all = incr.get_column("__idx").to_numpy()
    inc_all = incr.select(VALUE_COLUMNS).to_numpy().astype(np.float64)
    day_all = incr.get_column("day").to_numpy()
    days = int(day_all.max()) + 1
    bounds = np.searchsorted(day_all, np.arange(days + 1))
    totals = np.zeros((n, len(VALUE_COLUMNS)))
    w = a.winsorize
    capped = [c for name in (w.columns if w else []) for c in (name, f"pre_{name}")]
    names = [*VALUE_COLUMNS, "converted", *pre_cols]
    metrics = config.metric_defs
    running: dict[tuple[str, str], tuple[float, float, float]] = {}
    out: list[TimelinePoint] = []
    early = None

    def rows(block: np.ndarray, seen: np.ndarray) -> np.ndarray:
        z = np.column_stack([block[seen], (block[seen, 3] > 0).astype(np.float64), pre[seen]])
        if w is not None and (w.upper is not None or w.lower is not None):
            for c in capped:
                if c in names:
                    k = names.index(c)
                    z[:, k] = stats.winsorize(z[:, k], w.upper, w.lower, w.nonzero_only)
        return z

    for day in range(days):
        lo, hi = bounds[day], bounds[day + 1]
        today = np.zeros((n, len(VALUE_COLUMNS)))
        for j in range(len(VALUE_COLUMNS)):
            today[:, j] = np.bincount(idx_all[lo:hi], weights=inc_all[lo:hi, j], minlength=n)
        totals += today
        if day == days // 2 - 1:
            early = np.column_stack([totals, totals[:, 3] > 0]).copy()
        seen = totals[:, 0] > 0
        if not seen.any():
            continue
        arms = _arms(rows(totals, seen), variants[seen], vnames, names)
        active = today[:, 0] > 0
        day_arms = _arms(rows(today, active), variants[active], vnames, names) if active.any() else {}
        if e.control not in arms or arms[e.control].n < 2:
            continue
        for mname in e.metrics:
            for v in vnames:
                if v == e.control or v not in arms or arms[v].n < 2:
                    continue
                c = compare(arms, metrics[mname], e.control, v, a)
                if not (np.isfinite(c.rel_lift) and all(np.isfinite(c.seq_ci))):
                    continue
                lo_cs, hi_cs, p = running.get((mname, v), (-np.inf, np.inf, 1.0))
                lo_cs, hi_cs, p = max(lo_cs, c.seq_ci[0]), min(hi_cs, c.seq_ci[1]), min(p, c.seq_p_value)
                running[(mname, v)] = (lo_cs, hi_cs, p)
                point = TimelinePoint(day, mname, v, c.n_treatment + c.n_control, c.rel_lift, c.rel_ci, (lo_cs, hi_cs), p)
                if e.control in day_arms and v in day_arms and min(day_arms[e.control].n, day_arms[v].n) >= 2:
                    d = compare(day_arms, metrics[mname], e.control, v, a.model_copy(update={"cuped": False}))
                    point.daily_rel_lift, point.daily_ci = d.rel_lift, d.rel_ci
                out.append(point)
    novelty: list[NoveltyCheck] = []
    if early is not None and days >= 4:
        final = np.column_stack([totals, totals[:, 3] > 0])
        late = final - early
        late[:, -1] = (late[:, 3] > 0).astype(np.float64)  # converted in the late half
        novelty = _novelty(early, late, variants, e, config, days)
    return out, novelty


__all__ = ["NoveltyCheck", "TimelinePoint", "daily_timeline"]
