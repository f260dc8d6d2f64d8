"""Experiment definitions: a YAML file validated by pydantic.

Layout of the file (see ``abtest/experiments.yaml`` for the shipped one)::

    holdout: {fraction: 0.02, salt: recast-holdout-v1}
    default_model: dlf
    layers:
      - name: ranking                    # experiments in one layer are mutually exclusive
        salt: ranking-layer-v1           # layers hash with their own salt: orthogonal
        experiments:
          - name: dlf_vs_dmoe
            salt: dlf_vs_dmoe-2026-01    # variant hash salt (per experiment)
            buckets: [0, 5000]           # the layer buckets [start, end) this experiment owns
            traffic: 0.5                 # ramp: share of its buckets that is enrolled; only grows
            variants:
              - {name: control, weight: 1, model: dlf}
              - {name: treatment, weight: 1, model: dmoe}
            metrics: [ctr, gmv_per_user, conversion, aov]

Design rules the validation enforces:

* every hash space has 10,000 buckets; experiments inside one layer own
  disjoint bucket ranges, so they never share a unit;
* ramping is a change of ``traffic`` only: the enrolled buckets are
  ``[start, start + traffic * (end - start))``, a prefix that only grows, and the
  variant hash does not depend on ``traffic``; so earlier assignments stay valid;
* variant weights are positive and turned into contiguous bucket ranges of the
  experiment's own 10,000-bucket variant hash;
* at most one layer routes models (variants with ``model``), so two layers
  never disagree about which Triton model serves a request.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

N_BUCKETS = 10_000

Kind = Literal["mean", "ratio"]


class MetricDef(BaseModel):
    """A metric over the per-unit table (columns from ``abtest.aggregate``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Kind
    column: str | None = None
    """mean metrics: the per-unit column (gmv, converted, clicks, ...)."""
    numerator: str | None = None
    denominator: str | None = None
    """ratio metrics: sum(numerator) / sum(denominator) over units (delta method)."""
    higher_is_better: bool = True
    label: str | None = None

    @model_validator(mode="after")
    def _columns(self) -> "MetricDef":
        if self.kind == "mean" and not self.column:
            raise ValueError(f"mean metric {self.name!r} needs `column`")
        if self.kind == "ratio" and not (self.numerator and self.denominator):
            raise ValueError(f"ratio metric {self.name!r} needs `numerator` and `denominator`")
        return self

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column,) if self.kind == "mean" else (self.numerator, self.denominator)  # type: ignore[return-value]


BUILTIN_METRICS: dict[str, MetricDef] = {
    m.name: m
    for m in (
        MetricDef(name="ctr", kind="ratio", numerator="clicks", denominator="impressions", label="CTR (clicks / impressions)"),
        MetricDef(name="gmv_per_user", kind="mean", column="gmv", label="GMV per user"),
        MetricDef(name="conversion", kind="mean", column="converted", label="Conversion (share of users with an order)"),
        MetricDef(name="aov", kind="ratio", numerator="gmv", denominator="orders", label="Average order value (GMV / orders)"),
        MetricDef(name="orders_per_user", kind="mean", column="orders", label="Orders per user"),
        MetricDef(name="clicks_per_user", kind="mean", column="clicks", label="Clicks per user"),
    )
}


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    weight: float = Field(gt=0)
    model: str | None = None
    """Triton model that serves this variant (None: the default model)."""
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)


class Winsorize(BaseModel):
    model_config = ConfigDict(extra="forbid")

    columns: list[str] = Field(default_factory=lambda: ["gmv"])
    upper: float | None = Field(0.995, gt=0, le=1)
    """Upper percentile (as a fraction) at which per-unit values are capped. 0.995 of the non-zero
    values: on log-normal GMV (log-sd 2, buy rate 0.1) the A/A false-positive rate at 1,000 users per
    arm is 3.5% (2.0% without capping, 2.85% at 0.999, which is ~the largest of a few hundred buyers and
    caps almost nothing); 4.4-4.7% at 10,000 (benchmarks/abtest_validity.py)."""
    lower: float | None = Field(None, ge=0, lt=1)
    nonzero_only: bool = True
    """Compute the percentiles on the non-zero values only (GMV is mostly zero)."""


class Sequential(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    tuning_n: int = Field(10_000, gt=0)
    """Total units (both arms) at which the confidence sequence is tightest (GrowthBook's
    sequential tuning parameter); fixes the mixing variance of the normal-mixture mSPRT."""


class Bayes(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prior_mean: float = 0.0
    prior_sd: float = Field(0.3, gt=0)
    """Gaussian prior on the relative lift (0.3 = lifts beyond +-60% are unlikely)."""
    proper: bool = True


class Guardrail(BaseModel):
    """A "do no harm" metric: the treatment may not be worse than ``margin`` (relative) on it."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    margin: float = Field(0.02, gt=0, lt=1)
    """Non-inferiority margin as a relative change: 0.02 = at most 2% worse."""


class Analysis(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(0.05, gt=0, lt=0.5)
    power: float = Field(0.8, gt=0.5, lt=1)
    """Power for the minimum detectable effect and the users-still-needed estimate."""
    target_lift: float = Field(0.05, gt=0, lt=10)
    """The relative effect the experiment should be able to detect (the "+-x%" of the verdict)."""
    min_units_per_arm: int = Field(100, ge=2)
    min_nonzero_per_arm: int = Field(30, ge=0)
    """Minimum-sample rule: no decision before every arm has this many units and this many units with
    a non-zero numerator (buyers for GMV, clickers for CTR); below it the normal approximation of a
    heavy-tailed mean is not trustworthy."""
    cuped: bool = True
    cuped_relative: Literal["gbstats", "ratio"] = "gbstats"
    """Relative lift with CUPED: ``gbstats`` = (adj_T - adj_C) / plain_C (GrowthBook's definition),
    ``ratio`` = adj_T / adj_C - 1. Both estimate the same lift; the decision does not depend on it."""
    pre_period_days: int = Field(7, ge=0)
    winsorize: Winsorize | None = Field(default_factory=Winsorize)
    correction: Literal["holm", "bh", "none"] = "holm"
    srm_alpha: float = Field(0.001, gt=0, lt=1)
    sequential: Sequential = Field(default_factory=Sequential)
    bayes: Bayes = Field(default_factory=Bayes)


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    salt: str | None = None
    """Salt of the variant hash; defaults to the name. Never change it on a running experiment."""
    buckets: tuple[int, int] = (0, N_BUCKETS)
    traffic: float = Field(1.0, ge=0, le=1)
    variants: list[Variant] = Field(min_length=2)
    control: str | None = None
    """Name of the control variant; defaults to the first one."""
    metrics: list[str] = Field(default_factory=lambda: ["ctr", "gmv_per_user", "conversion", "aov"])
    primary_metric: str | None = None
    guardrails: list[Guardrail] = Field(default_factory=list)
    quantiles: list[float] = Field(default_factory=list)
    """Order-value quantiles to read out (e.g. [0.5, 0.9]: median and p90 order value; abtest/quantiles.py)."""
    segments: list[str] = Field(default_factory=list)
    """Dimensions to break the lifts down by (abtest/segments.py: built-in pre-period dimensions or
    columns of the unit attributes)."""
    start: datetime | None = None
    end: datetime | None = None
    enabled: bool = True
    analysis: Analysis = Field(default_factory=Analysis)
    description: str = ""

    @field_validator("quantiles")
    @classmethod
    def _quantiles(cls, v: list[float]) -> list[float]:
        if any(not 0 < q < 1 for q in v):
            raise ValueError(f"quantiles must lie strictly between 0 and 1, got {v}")
        return v

    @field_validator("buckets")
    @classmethod
    def _buckets(cls, v: tuple[int, int]) -> tuple[int, int]:
        start, end = v
        if not 0 <= start < end <= N_BUCKETS:
            raise ValueError(f"buckets must satisfy 0 <= start < end <= {N_BUCKETS}, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "Experiment":
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment {self.name!r}: duplicate variant names {names}")
        if self.control is None:
            self.control = names[0]
        elif self.control not in names:
            raise ValueError(f"experiment {self.name!r}: control {self.control!r} is not a variant ({names})")
        if self.primary_metric is None and self.metrics:
            self.primary_metric = self.metrics[0]
        if self.primary_metric is not None and self.primary_metric not in self.metrics:
            raise ValueError(f"experiment {self.name!r}: primary_metric {self.primary_metric!r} is not in metrics")
        if self.start and self.end and self.end <= self.start:
            raise ValueError(f"experiment {self.name!r}: end must be after start")
        return self

    @property
    def hash_salt(self) -> str:
        return self.salt or self.name

    @property
    def weights(self) -> list[float]:
        total = sum(v.weight for v in self.variants)
        return [v.weight / total for v in self.variants]

    def variant_bounds(self) -> list[int]:
        """Upper bucket bound (exclusive) of each variant in the 10,000-bucket variant hash."""
        cum, bounds = 0.0, []
        for w in self.weights:
            cum += w
            bounds.append(int(round(cum * N_BUCKETS)))
        bounds[-1] = N_BUCKETS
        return bounds

    @property
    def enrolled_end(self) -> int:
        """Layer buckets [buckets[0], enrolled_end) are enrolled at the current traffic."""
        start, end = self.buckets
        return start + int(round(self.traffic * (end - start)))

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"experiment {self.name!r} has no variant {name!r}")


class Layer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    salt: str | None = None
    experiments: list[Experiment] = Field(default_factory=list)

    @property
    def hash_salt(self) -> str:
        return self.salt or f"layer:{self.name}"

    @model_validator(mode="after")
    def _disjoint(self) -> "Layer":
        ranges = sorted((e.buckets, e.name) for e in self.experiments if e.enabled)
        for (a, na), (b, nb) in zip(ranges, ranges[1:]):
            if b[0] < a[1]:
                raise ValueError(
                    f"layer {self.name!r}: experiments {na!r} {list(a)} and {nb!r} {list(b)} overlap; "
                    "experiments in one layer must own disjoint bucket ranges"
                )
        return self


class Holdout(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fraction: float = Field(0.0, ge=0, lt=1)
    salt: str = "recast-global-holdout"

    @property
    def n_buckets(self) -> int:
        return int(round(self.fraction * N_BUCKETS))


class ExperimentsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_model: str | None = None
    """Model served outside experiments (None: the gateway's own default)."""
    holdout: Holdout = Field(default_factory=Holdout)
    metrics: list[MetricDef] = Field(default_factory=list)
    """Extra metric definitions (the built-ins: ctr, gmv_per_user, conversion, aov, ...)."""
    layers: list[Layer] = Field(default_factory=list)

    @model_validator(mode="after")
    def _global(self) -> "ExperimentsConfig":
        layer_names = [layer.name for layer in self.layers]
        if len(set(layer_names)) != len(layer_names):
            raise ValueError(f"duplicate layer names {layer_names}")
        exp_names = [e.name for layer in self.layers for e in layer.experiments]
        dupes = sorted({n for n in exp_names if exp_names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate experiment names {dupes}")
        salts = [layer.hash_salt for layer in self.layers]
        if len(set(salts)) != len(salts):
            raise ValueError("layers must have distinct salts, or they are not orthogonal")
        routing = [
            layer.name
            for layer in self.layers
            if any(v.model for e in layer.experiments if e.enabled for v in e.variants)
        ]
        if len(routing) > 1:
            raise ValueError(f"only one layer may route models (variants with `model`); found {routing}")
        known = {**BUILTIN_METRICS, **{m.name: m for m in self.metrics}}
        for layer in self.layers:
            for e in layer.experiments:
                missing = [m for m in [*e.metrics, *(g.metric for g in e.guardrails)] if m not in known]
                if missing:
                    raise ValueError(f"experiment {e.name!r}: unknown metrics {missing} (known: {sorted(known)})")
        return self

    @property
    def metric_defs(self) -> dict[str, MetricDef]:
        return {**BUILTIN_METRICS, **{m.name: m for m in self.metrics}}

    def experiments(self) -> list[tuple[Layer, Experiment]]:
        return [(layer, e) for layer in self.layers for e in layer.experiments]

    def find(self, name: str) -> tuple[Layer, Experiment]:
        for layer, e in self.experiments():
            if e.name == name:
                return layer, e
        raise KeyError(f"no experiment {name!r} in the config (have: {[e.name for _, e in self.experiments()]})")


def load_config(path: str | Path) -> ExperimentsConfig:
    """Read and validate an experiments YAML file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"experiments config {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return ExperimentsConfig.model_validate(raw)


def check_ramp(old: ExperimentsConfig, new: ExperimentsConfig) -> list[str]:
    """Problems that would move already-assigned units if ``new`` replaced ``old``.

    Allowed: raising ``traffic``, adding experiments/layers in free buckets.
    Not allowed on a running experiment: changing its salt, its layer or layer salt,
    its bucket range, its variants' weights/order, or lowering traffic; changing the holdout.
    """
    problems: list[str] = []
    if old.holdout != new.holdout:
        problems.append("the global holdout changed (fraction or salt)")
    new_index = {e.name: (layer, e) for layer, e in new.experiments()}
    for layer, e in old.experiments():
        if not e.enabled:
            continue
        if e.name not in new_index:
            problems.append(f"{e.name}: removed while enabled")
            continue
        nl, ne = new_index[e.name]
        if nl.hash_salt != layer.hash_salt:
            problems.append(f"{e.name}: layer salt changed")
        if ne.hash_salt != e.hash_salt:
            problems.append(f"{e.name}: salt changed")
        if ne.buckets != e.buckets:
            problems.append(f"{e.name}: bucket range changed {list(e.buckets)} -> {list(ne.buckets)}")
        if [v.name for v in ne.variants] != [v.name for v in e.variants] or ne.variant_bounds() != e.variant_bounds():
            problems.append(f"{e.name}: variants or weights changed")
        if ne.traffic < e.traffic:
            problems.append(f"{e.name}: traffic lowered {e.traffic} -> {ne.traffic} (ramps only add units)")
    return problems
