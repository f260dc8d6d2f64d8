"""Readout of the global holdout: the cumulative impact of everything shipped and running.

Units in the holdout (``config.holdout``: a fixed share of users by their own hash) never see an
experiment and get the default model; everyone else gets the shipped experience plus whatever runs.
Reading "everyone else" against the holdout over a window measures the sum of all launches, the
number single experiments cannot give (effects that do not add up, novelty that wore off).

The holdout is read out as an experiment of its own: every logged request (de-duplicated over the
experiments it was tagged with) becomes an exposure of the synthetic experiment ``global_holdout``
with the variant ``holdout`` or ``launched`` by ``Assigner.in_holdout``; ``analysis.analyze`` then gives
the same statistics, SRM check (against the configured fraction) and verdicts as any experiment.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from abtest.analysis import Readout, analyze
from abtest.assignment import buckets
from abtest.config import Analysis, ExperimentsConfig

NAME = "global_holdout"


def holdout_config(config: ExperimentsConfig, metrics: list[str] | None = None, primary: str = "gmv_per_user",
                   analysis: Analysis | None = None) -> ExperimentsConfig:
    """A config with the one synthetic experiment: control = holdout, treatment = launched."""
    f = config.holdout.fraction
    if f <= 0:
        raise ValueError("the config has no global holdout (holdout.fraction is 0): nothing to read out")
    metrics = metrics or ["gmv_per_user", "ctr", "conversion", "aov"]
    return ExperimentsConfig.model_validate({
        "metrics": [m.model_dump() for m in config.metrics],
        "layers": [{"name": NAME, "experiments": [{
            "name": NAME, "description": "everything launched vs the global holdout",
            "variants": [{"name": "holdout", "weight": f}, {"name": "launched", "weight": 1 - f}],
            "metrics": metrics, "primary_metric": primary,
            "analysis": (analysis or Analysis()).model_dump(),
        }]}],
    })


def holdout_exposures(config: ExperimentsConfig, exposures: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """Every request once, tagged with the synthetic experiment and the unit's holdout membership."""
    lazy = exposures.lazy() if isinstance(exposures, pl.DataFrame) else exposures
    reqs = lazy.unique(subset=["request_id"], keep="first", maintain_order=False).collect()
    h = config.holdout
    held = buckets(reqs.get_column("unit_id").cast(pl.String), h.salt) < h.n_buckets
    return reqs.with_columns(
        pl.lit(NAME).alias("layer"), pl.lit(NAME).alias("experiment"),
        pl.Series("variant", ["holdout" if x else "launched" for x in held], dtype=pl.String),
    ).lazy()


def analyze_holdout(config: ExperimentsConfig, exposures, outcomes, start: datetime | None = None, end: datetime | None = None,
                    **kwargs) -> Readout:
    """Read out everything launched against the global holdout (``start``: default the first request)."""
    cfg = holdout_config(config)
    if start is not None:
        cfg.layers[0].experiments[0].start = start
    return analyze(cfg, NAME, holdout_exposures(config, exposures), outcomes, end=end, **kwargs)


__all__ = ["NAME", "analyze_holdout", "holdout_config", "holdout_exposures"]
