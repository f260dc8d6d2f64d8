"""Segment breakdowns: the lift within each value of a dimension, multiple-testing aware.

Dimensions are declared per experiment (``segments: [new_vs_returning, pre_activity]``) and must be
fixed before the treatment can act on them, or the breakdown is biased (segmenting on a post-period
outcome compares different users in each arm). Built-in, from the pre-period of the unit table:

* ``new_vs_returning``: ``new`` without pre-period requests, ``returning`` otherwise;
* ``pre_activity``: pre-period requests ``0``, ``1-3``, ``4+``;
* ``first_exposure_weekday``: the weekday of the unit's first exposure.

Any other name is a column of the unit attributes passed to ``analyze(attributes=...)`` (a table
keyed by ``unit_id``, e.g. country or platform).

Every (segment value, metric, variant) cell is a full ``compare`` (so CUPED, Fieller and the
minimum-sample rule apply); p-values are Benjamini-Hochberg adjusted over all cells, and per
(dimension, metric, variant) Cochran's Q tests whether the lift differs between the values at all
(Holm over those tests): a segment is only called different when its dimension's Q test says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import special

from abtest import stats
from abtest.aggregate import variant_moments
from abtest.comparison import Comparison, compare
from abtest.config import Experiment, ExperimentsConfig

BUILTIN = {
    "new_vs_returning": lambda: pl.when(pl.col("pre_requests") > 0).then(pl.lit("returning")).otherwise(pl.lit("new")),
    "pre_activity": lambda: pl.when(pl.col("pre_requests") == 0).then(pl.lit("0"))
    .when(pl.col("pre_requests") <= 3).then(pl.lit("1-3")).otherwise(pl.lit("4+")),
    "first_exposure_weekday": lambda: pl.col("first_exposure").dt.strftime("%a"),
}


@dataclass
class Heterogeneity:
    dimension: str
    metric: str
    variant: str
    q: float
    df: int
    p_value: float
    p_adjusted: float
    differs: bool


def _cochran_q(rows: list[Comparison]) -> tuple[float, int, float]:
    """Cochran's Q of the absolute lifts (inverse-variance weights) and its chi-square p-value."""
    ok = [c for c in rows if c.status != "not computable" and np.isfinite(c.abs_lift) and c.abs_ci[1] > c.abs_ci[0]]
    if len(ok) < 2:
        return 0.0, 0, 1.0
    d = np.array([c.abs_lift for c in ok])
    se = np.array([(c.abs_ci[1] - c.abs_ci[0]) / (2 * stats.critical_value(c.df)) for c in ok])
    w = 1.0 / np.square(se)
    q = float(np.sum(w * np.square(d - np.sum(w * d) / np.sum(w))))
    return q, len(ok) - 1, float(special.chdtrc(len(ok) - 1, q))


def segment_breakdown(units: pl.DataFrame, e: Experiment, config: ExperimentsConfig, columns: tuple[str, ...],
                      attributes: pl.DataFrame | None = None, valid: bool = True) -> tuple[list[Comparison], list[Heterogeneity]]:
    """Comparisons per segment value (``Comparison.segment`` = "dimension=value") and the Q tests."""
    a = e.analysis
    cells: list[Comparison] = []
    groups: dict[tuple[str, str, str], list[Comparison]] = {}
    for dim in e.segments:
        if dim in BUILTIN:
            if dim != "first_exposure_weekday" and a.pre_period_days == 0:
                continue  # no pre-period: every unit would look new
            tagged = units.with_columns(BUILTIN[dim]().alias("__segment"))
        else:
            if attributes is None or dim not in attributes.columns:
                raise ValueError(f"segment {dim!r} is neither built in ({sorted(BUILTIN)}) nor a column of the unit attributes")
            tagged = units.join(attributes.select("unit_id", pl.col(dim).cast(pl.String).alias("__segment")), on="unit_id", how="left")
            tagged = tagged.with_columns(pl.col("__segment").fill_null("(unknown)"))
        for value in sorted(tagged.get_column("__segment").unique().to_list()):
            arms = variant_moments(tagged.filter(pl.col("__segment") == value), columns)
            for mname in e.metrics:
                for v in (x.name for x in e.variants):
                    if v == e.control or v not in arms or e.control not in arms:
                        continue
                    c = compare(arms, config.metric_defs[mname], e.control, v, a)
                    c.role, c.segment = "segment", f"{dim}={value}"
                    cells.append(c)
                    groups.setdefault((dim, mname, v), []).append(c)
    for c, p in zip(cells, stats.benjamini_hochberg([c.p_value for c in cells])):
        c.p_adjusted = float(p)
        c.decision = "invalid (SRM)" if not valid else c.status if c.status != "ok" else (
            "inconclusive" if not p < a.alpha else
            "significant improvement" if (c.abs_lift > 0) == c.higher_is_better else "significant regression")
    tests = [(key, *_cochran_q(rows)) for key, rows in groups.items()]
    adjusted = stats.holm([t[3] for t in tests]) if tests else []
    het = [Heterogeneity(dim, m, v, q, df, p, float(pa), bool(valid and pa < a.alpha and df > 0))
           for ((dim, m, v), q, df, p), pa in zip(tests, adjusted)]
    return cells, het


__all__ = ["BUILTIN", "Heterogeneity", "segment_breakdown"]
