"""Per-unit aggregation of exposures and outcomes with polars (lazy).

``unit_table`` turns the event logs into one row per exposed unit:

======================  ==============================================================
unit_id, variant        the unit and the variant it was exposed to
first_exposure          time of its first exposure in the analysis window
requests, impressions   exposures and items shown (sum of ``n_items``)
clicks, orders, gmv     outcomes after the unit's first exposure, inside the window
converted               1.0 when the unit ordered at least once
pre_*                   the same from the pre-period (before the start): CUPED covariates
======================  ==============================================================

Units seen in more than one variant are dropped and counted (an assignment bug or a
config change on a running experiment; the readout reports it).

``variant_moments`` reduces that table to ``stats.Moments`` per variant (sums and
cross products computed by polars), after optional winsorization whose caps are
computed on all variants pooled.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Sequence

import numpy as np
import polars as pl

from abtest.events import CLICK, PURCHASE
from abtest.stats import Moments

VALUE_COLUMNS = ("requests", "impressions", "clicks", "orders", "gmv", "converted")
PRE_COLUMNS = tuple(f"pre_{c}" for c in VALUE_COLUMNS)


def _lazy(frame: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


def _outcome_aggs() -> list[pl.Expr]:
    is_click = pl.col("event") == CLICK
    is_buy = pl.col("event") == PURCHASE
    return [
        is_click.sum().cast(pl.Float64).alias("clicks"),
        is_buy.sum().cast(pl.Float64).alias("orders"),
        pl.when(is_buy).then(pl.col("value")).otherwise(0.0).sum().alias("gmv"),
    ]


def exposed_units(exposures: pl.LazyFrame, experiment: str, start: datetime | None, end: datetime | None) -> pl.LazyFrame:
    exp = _lazy(exposures).filter(pl.col("experiment") == experiment)
    if start is not None:
        exp = exp.filter(pl.col("ts") >= start)
    if end is not None:
        exp = exp.filter(pl.col("ts") < end)
    return exp.group_by("unit_id").agg(
        pl.col("variant").min(),
        # 1 or 2: "more than one variant" is all that matters (cheaper than n_unique on strings)
        (pl.col("variant").min() != pl.col("variant").max()).cast(pl.Int32).add(1).alias("n_variants"),
        pl.col("ts").min().alias("first_exposure"),
        pl.len().cast(pl.Float64).alias("requests"),
        pl.col("n_items").sum().cast(pl.Float64).alias("impressions"),
    )


def pre_period(exposures: pl.LazyFrame, outcomes: pl.LazyFrame, start: datetime, days: int) -> pl.LazyFrame:
    """Per-unit activity in [start - days, start): requests, impressions, clicks, orders, gmv."""
    lo = start - timedelta(days=days)
    window = (pl.col("ts") >= lo) & (pl.col("ts") < start)
    # a request in several experiments is logged once per experiment: count it once. Requests in no
    # experiment have exactly one row (experiment null), so only the tagged rows need de-duplication.
    rows = _lazy(exposures).filter(window).select("request_id", "unit_id", "experiment", "n_items")
    reqs = (
        pl.concat([
            rows.filter(pl.col("experiment").is_null()),
            rows.filter(pl.col("experiment").is_not_null()).unique(subset=["request_id"], keep="any"),
        ])
        .group_by("unit_id")
        .agg(pl.len().cast(pl.Float64).alias("pre_requests"), pl.col("n_items").sum().cast(pl.Float64).alias("pre_impressions"))
    )
    outs = (
        _lazy(outcomes)
        .filter(window)
        .group_by("unit_id")
        .agg([e.alias(f"pre_{e.meta.output_name()}") for e in _outcome_aggs()])
    )
    return reqs.join(outs, on="unit_id", how="full", coalesce=True)


def unit_table(
    exposures: pl.DataFrame | pl.LazyFrame,
    outcomes: pl.DataFrame | pl.LazyFrame,
    experiment: str,
    start: datetime | None = None,
    end: datetime | None = None,
    pre_days: int = 0,
) -> pl.LazyFrame:
    """One row per exposed unit (see the module docstring). Lazy: ``.collect()`` it."""
    exposures, outcomes = _lazy(exposures), _lazy(outcomes)
    units = exposed_units(exposures, experiment, start, end)
    outs = outcomes
    if start is not None:
        outs = outs.filter(pl.col("ts") >= start)
    if end is not None:
        outs = outs.filter(pl.col("ts") < end)
    post = (
        outs.join(units.select("unit_id", "first_exposure"), on="unit_id", how="inner")
        .filter(pl.col("ts") >= pl.col("first_exposure"))
        .group_by("unit_id")
        .agg(_outcome_aggs())
    )
    table = units.join(post, on="unit_id", how="left")
    if pre_days > 0 and start is not None:
        table = table.join(pre_period(exposures, outcomes, start, pre_days), on="unit_id", how="left")
    else:
        table = table.with_columns([pl.lit(0.0).alias(c) for c in PRE_COLUMNS if c != "pre_converted"])
    return table.with_columns(
        [pl.col(c).fill_null(0.0) for c in ("clicks", "orders", "gmv", *[c for c in PRE_COLUMNS if c != "pre_converted"])]
    ).with_columns(
        (pl.col("orders") > 0).cast(pl.Float64).alias("converted"),
        (pl.col("pre_orders") > 0).cast(pl.Float64).alias("pre_converted"),
    )


@dataclass(frozen=True)
class WinsorCaps:
    column: str
    lower: float
    upper: float


def winsorize_units(
    units: pl.DataFrame, columns: Sequence[str], upper: float | None, lower: float | None = None, nonzero_only: bool = True
) -> tuple[pl.DataFrame, list[WinsorCaps]]:
    """Cap per-unit values at percentiles computed on all variants pooled (linear interpolation,
    numpy's default); with ``nonzero_only`` the percentiles are of the non-zero values and zeros stay zero.
    Each ``pre_`` column present is capped with its own percentiles."""
    caps: list[WinsorCaps] = []
    exprs = []
    targets = [c for col in columns for c in (col, f"pre_{col}") if c in units.columns]
    for c in targets:
        src = units.get_column(c)
        base = src.filter(src != 0) if nonzero_only else src
        if base.len() == 0:
            continue
        lo = float(base.quantile(lower, interpolation="linear")) if lower is not None else -np.inf
        hi = float(base.quantile(upper, interpolation="linear")) if upper is not None else np.inf
        caps.append(WinsorCaps(c, lo, hi))
        clipped = pl.col(c).clip(lower_bound=lo if np.isfinite(lo) else None, upper_bound=hi if np.isfinite(hi) else None)
        exprs.append((pl.when(pl.col(c) == 0).then(0.0).otherwise(clipped) if nonzero_only else clipped).alias(c))
    return (units.with_columns(exprs) if exprs else units), caps


def variant_moments(units: pl.DataFrame | pl.LazyFrame, columns: Sequence[str]) -> dict[str, Moments]:
    """Moments (n, means, covariance) of ``columns`` per variant, from sums and cross products."""
    cols = list(columns)
    aggs = [pl.len().alias("__n")]
    aggs += [pl.col(c).sum().alias(f"s:{c}") for c in cols]
    aggs += [(pl.col(c) != 0).sum().alias(f"nz:{c}") for c in cols]
    aggs += [(pl.col(a) * pl.col(b)).sum().alias(f"x:{a}:{b}") for i, a in enumerate(cols) for b in cols[i:]]
    sums = _lazy(units).group_by("variant").agg(aggs).collect()
    out: dict[str, Moments] = {}
    k = len(cols)
    for row in sums.iter_rows(named=True):
        s = np.array([row[f"s:{c}"] for c in cols], dtype=np.float64)
        x = np.zeros((k, k))
        for i, a in enumerate(cols):
            for j in range(i, k):
                x[i, j] = x[j, i] = row[f"x:{a}:{cols[j]}"]
        nz = np.array([row[f"nz:{c}"] for c in cols], dtype=np.int64)
        out[row["variant"]] = Moments.from_sums(row["__n"], cols, s, x, nz)
    return out


def daily_unit_increments(
    exposures: pl.DataFrame | pl.LazyFrame,
    outcomes: pl.DataFrame | pl.LazyFrame,
    experiment: str,
    start: datetime,
    end: datetime | None = None,
    first_exposure: pl.DataFrame | pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """(unit_id, day) increments of requests/impressions/clicks/orders/gmv since ``start``,
    outcomes counted from the unit's first exposure; for the cumulative-over-time series.
    ``first_exposure``: the units' (unit_id, first_exposure) when already known."""
    exposures, outcomes = _lazy(exposures), _lazy(outcomes)
    exp = exposures.filter((pl.col("experiment") == experiment) & (pl.col("ts") >= start))
    outs = outcomes.filter(pl.col("ts") >= start)
    if end is not None:
        exp, outs = exp.filter(pl.col("ts") < end), outs.filter(pl.col("ts") < end)
    day = ((pl.col("ts") - pl.lit(start)).dt.total_seconds() // 86_400).cast(pl.Int32).alias("day")
    # (unit_id, first_exposure) of the unit table when the caller has it: saves a pass over the exposures
    first = _lazy(first_exposure) if first_exposure is not None else exp.group_by("unit_id").agg(pl.col("ts").min().alias("first_exposure"))
    e = exp.group_by("unit_id", day).agg(
        pl.len().cast(pl.Float64).alias("requests"), pl.col("n_items").sum().cast(pl.Float64).alias("impressions")
    )
    o = (
        outs.join(first, on="unit_id", how="inner")
        .filter(pl.col("ts") >= pl.col("first_exposure"))
        .group_by("unit_id", day)
        .agg(_outcome_aggs())
    )
    return e.join(o, on=["unit_id", "day"], how="full", coalesce=True).with_columns(
        [pl.col(c).fill_null(0.0) for c in ("requests", "impressions", "clicks", "orders", "gmv")]
    )


def cumulative_units(increments: pl.DataFrame, through_day: int) -> pl.DataFrame:
    """Per-unit totals over days [0, through_day] (units first exposed by then)."""
    return (
        increments.lazy()
        .filter(pl.col("day") <= through_day)
        .group_by("unit_id")
        .agg([pl.col(c).sum() for c in ("requests", "impressions", "clicks", "orders", "gmv")])
        .filter(pl.col("requests") > 0)
        .with_columns((pl.col("orders") > 0).cast(pl.Float64).alias("converted"))
        .collect()
    )
