"""The readout of one experiment: events -> per-unit table -> statistics -> decisions.

``analyze`` glues ``aggregate`` (polars) and ``stats`` (pure functions) together:

1. per-unit table over the experiment window, pre-period covariates, winsorization;
2. SRM check of units per variant against the configured weights (a failure
   invalidates every decision of the readout);
3. per metric and treatment variant: estimates per arm (CUPED when configured and the
   covariate has variance), absolute and relative lift, Welch t-test, the mSPRT always-valid
   p-value and confidence sequence, the Bayesian readout;
4. Holm or Benjamini-Hochberg across the secondary (metric, variant) comparisons (the primary metric
   is the pre-registered decision, tested at alpha); guardrails as non-inferiority checks; verdicts;
5. order-value quantiles and segment breakdowns when the experiment declares them;
6. the cumulative and daily lift per day (fixed-horizon intervals, the confidence sequence) and the
   novelty check (abtest/timeline.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from abtest import stats
from abtest.aggregate import (
    PRE_COLUMNS,
    VALUE_COLUMNS,
    WinsorCaps,
    unit_table,
    variant_moments,
    winsorize_units,
)
from abtest.comparison import Comparison, compare, decide
from abtest.config import Experiment, ExperimentsConfig
from abtest.quantiles import QuantileComparison, quantile_readout
from abtest.segments import Heterogeneity, segment_breakdown
from abtest.timeline import NoveltyCheck, TimelinePoint, daily_timeline
from abtest.verdict import Verdict, verdicts

MOMENT_COLUMNS = VALUE_COLUMNS + PRE_COLUMNS


@dataclass
class Readout:
    experiment: str
    layer: str
    control: str
    variants: list[str]
    window: tuple[str | None, str | None]
    generated_at: str
    alpha: float
    correction: str
    units: dict[str, int]
    srm: dict[str, Any]
    valid: bool
    comparisons: list[Comparison]
    timeline: list[TimelinePoint] = field(default_factory=list)
    novelty: list[NoveltyCheck] = field(default_factory=list)
    segments: list[Comparison] = field(default_factory=list)
    quantiles: list[QuantileComparison] = field(default_factory=list)
    heterogeneity: list[Heterogeneity] = field(default_factory=list)
    winsor_caps: list[dict[str, Any]] = field(default_factory=list)
    dropped_multi_variant_units: int = 0
    primary_metric: str | None = None
    notes: list[str] = field(default_factory=list)
    simulation: dict[str, Any] | None = None
    verdicts: list[Verdict] = field(default_factory=list)
    target_lift: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))

    @property
    def summary(self) -> str:
        if not self.valid:
            return f"INVALID: sample ratio mismatch (p = {self.srm['p_value']:.2e} < {self.srm['threshold']}); do not read the lifts"
        return " ".join(v.headline for v in self.verdicts) or "no comparisons"


def json_safe(obj: Any) -> Any:
    """JSON-safe: NaN/inf -> None, tuples -> lists, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _experiment_start(exposures: pl.LazyFrame, e: Experiment) -> datetime | None:
    if e.start is not None:
        return e.start.replace(tzinfo=None) if e.start.tzinfo else e.start
    got = exposures.filter(pl.col("experiment") == e.name).select(pl.col("ts").min()).collect().item()
    return got


def _prepare_units(units: pl.DataFrame, e: Experiment) -> tuple[pl.DataFrame, list[WinsorCaps]]:
    w = e.analysis.winsorize
    if w is None or (w.upper is None and w.lower is None):
        return units, []
    return winsorize_units(units, w.columns, w.upper, w.lower, w.nonzero_only)


def analyze(
    config: ExperimentsConfig,
    experiment: str,
    exposures: pl.DataFrame | pl.LazyFrame,
    outcomes: pl.DataFrame | pl.LazyFrame,
    end: datetime | None = None,
    timeline: bool = True,
    simulation: dict[str, Any] | None = None,
    attributes: pl.DataFrame | None = None,
) -> Readout:
    """Read out ``experiment`` from the logged events (``attributes``: unit_id + segment columns)."""
    layer, e = config.find(experiment)
    a = e.analysis
    exposures = exposures.lazy() if isinstance(exposures, pl.DataFrame) else exposures
    outcomes = outcomes.lazy() if isinstance(outcomes, pl.DataFrame) else outcomes
    start = _experiment_start(exposures, e)
    if start is None:
        raise ValueError(f"no exposures logged for experiment {experiment!r}")
    if end is None and e.end is not None:
        end = e.end.replace(tzinfo=None) if e.end.tzinfo else e.end
    # polars' streaming engine: same result, ~1.5x faster and leaner on the 10M-event benchmark
    units = unit_table(exposures, outcomes, experiment, start, end, a.pre_period_days).collect(engine="streaming")
    dropped = int(units.filter(pl.col("n_variants") > 1).height)
    units = units.filter(pl.col("n_variants") == 1)
    known = {v.name for v in e.variants}
    stray = sorted(set(units.get_column("variant").unique().to_list()) - known)
    notes: list[str] = []
    if stray:
        notes.append(f"exposures name variants not in the config: {stray} (ignored)")
        units = units.filter(pl.col("variant").is_in(sorted(known)))
    if dropped:
        notes.append(f"{dropped} unit(s) were exposed to more than one variant and were dropped")
    units, caps = _prepare_units(units, e)
    arms = variant_moments(units, MOMENT_COLUMNS)

    names = [v.name for v in e.variants]
    counts = [arms[n].n if n in arms else 0 for n in names]
    srm = stats.srm_test(counts, e.weights, a.srm_alpha)
    valid = srm.passed
    if not valid:
        notes.append("sample ratio mismatch: the split of units differs from the configured weights; the readout is invalid")

    metrics = config.metric_defs
    comps: list[Comparison] = []
    truth = (simulation or {}).get("true_relative_lift", {})
    roles = [(m, "metric", None) for m in e.metrics] + [(g.metric, "guardrail", g.margin) for g in e.guardrails]
    # an arm without units still gets its comparisons, each "not computable" with the reason
    empty = stats.Moments(0, MOMENT_COLUMNS, np.zeros(len(MOMENT_COLUMNS)), np.zeros((len(MOMENT_COLUMNS),) * 2))
    for mname, role, margin in roles:
        for v in names:
            if v == e.control:
                continue
            c = compare({e.control: arms.get(e.control, empty), v: arms.get(v, empty)}, metrics[mname], e.control, v, a)
            c.role, c.margin = role, margin
            if isinstance(truth.get(v), dict) and mname in truth[v]:
                c.true_rel_lift = float(truth[v][mname])
            comps.append(c)
    # the primary metric is the pre-registered decision: tested at alpha, its interval and verdict agree.
    # Secondary metrics form the multiplicity family (Holm/BH); guardrails are non-inferiority checks.
    family = [i for i, c in enumerate(comps) if c.role == "metric" and c.metric != e.primary_metric]
    for i, p in zip(family, stats.adjust([comps[i].p_value for i in family], a.correction)):
        comps[i].p_adjusted = float(p)
    for c in comps:
        if c.role == "metric" and c.metric == e.primary_metric:
            c.p_adjusted = c.p_value
        c.decision = decide(c, c.p_adjusted if c.role == "metric" else c.p_value, a.alpha, valid)
        c.sequential_decision = decide(c, c.seq_p_value, a.alpha, valid)

    quants = quantile_readout(outcomes, units, start, end, e.quantiles, e.control, names, a.alpha) if e.quantiles else []
    cells, het = segment_breakdown(units, e, config, MOMENT_COLUMNS, attributes, valid) if e.segments else ([], [])

    points: list[TimelinePoint] = []
    novelty: list[NoveltyCheck] = []
    if timeline and e.analysis.sequential.enabled:
        points, novelty = daily_timeline(exposures, outcomes, units, e, config, start, end)

    return Readout(
        experiment=e.name,
        layer=layer.name,
        control=e.control or names[0],
        variants=names,
        window=(str(start), str(end) if end else None),
        generated_at=datetime.now().isoformat(timespec="seconds"),
        alpha=a.alpha,
        correction=a.correction,
        units={n: c for n, c in zip(names, counts)},
        srm=asdict(srm),
        valid=valid,
        comparisons=comps,
        timeline=points,
        novelty=novelty,
        segments=cells,
        quantiles=quants,
        heterogeneity=het,
        winsor_caps=[asdict(c) for c in caps],
        dropped_multi_variant_units=dropped,
        primary_metric=e.primary_metric,
        notes=notes,
        simulation=simulation,
        verdicts=verdicts(comps, e.primary_metric, valid, a.target_lift),
        target_lift=a.target_lift,
    )


def readout_from_dir(config: ExperimentsConfig, experiment: str, directory, **kwargs) -> Readout:
    """``analyze`` over events written by a ParquetSink (plus ``simulation.json`` when present)."""
    import json
    from pathlib import Path

    from abtest.events import scan_events

    exposures, outcomes = scan_events(directory)
    sim_path = Path(directory) / "simulation.json"
    simulation = json.loads(sim_path.read_text()) if sim_path.exists() else None
    return analyze(config, experiment, exposures, outcomes, simulation=simulation, **kwargs)


__all__ = ["Comparison", "NoveltyCheck", "Readout", "TimelinePoint", "analyze", "compare", "readout_from_dir"]
