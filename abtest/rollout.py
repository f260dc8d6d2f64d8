"""Guarded rollout: a candidate model earns traffic only when the experiment readout says so.

The candidate enters a dedicated experiment against the live model at a small
traffic share and climbs the ramp (``traffic`` raised stage by stage; the
assignment's ramp rule ``check_ramp`` is checked at every step, so no user
already assigned changes arm). After each stage the readout decides:

* **promote** (at the last stage) or **ramp** (before it): the primary metric
  (CTR) improved significantly, GMV per user is shown non-inferior (the
  experiment's guardrail), and the serving guardrails hold: p99 latency at most
  ``latency_margin`` above the live model's, error rate at most
  ``error_margin`` (absolute) above it with 95% confidence;
* **roll back**: the readout says don't ship (a regression, a guardrail harmed,
  or no effect although the sample could detect the target lift), the split is
  invalid (SRM), a serving guardrail fails, or the stage ran out of simulated
  days (``max_stage_days``) without a decision: a candidate is never promoted
  on missing evidence;
* **hold**: keep the stage running another ``stage_days``.

Every decision is a :class:`Decision` with its evidence; :func:`report_line`
renders one line of the loop's report.

:func:`simulate_rollout` drives the whole thing with the synthetic marketplace
(abtest/simulator.py): the candidate's quality is an injected CTR effect
(SIMULATION, labelled as such) and its serving behaviour a latency multiplier
and an error rate, so a good candidate and a bad one (``-10%`` CTR) can be
shown promoted and rolled back without a cluster, in seconds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable

import numpy as np

from abtest.config import ExperimentsConfig, check_ramp

CONTROL, CANDIDATE = "control", "candidate"


@dataclass(frozen=True)
class RolloutPolicy:
    stages: tuple[float, ...] = (0.05, 0.25)
    """Share of users that see the candidate at each stage (the control arm gets as many)."""
    stage_days: int = 2
    max_stage_days: int = 8
    primary_metric: str = "ctr"
    gmv_margin: float = 0.1
    """GMV per user may be at most 10% worse (non-inferiority, the readout's guardrail)."""
    latency_margin: float = 0.2
    """Candidate p99 latency at most 20% above the live model's."""
    error_margin: float = 0.002
    """Candidate error rate at most 0.2 percentage points above the live model's (upper 95% bound)."""
    target_lift: float = 0.05
    min_units_per_arm: int = 200
    always_valid: bool = True
    """Promote or ramp only when the primary metric's always-valid (mSPRT) p-value is below alpha too: the
    readout is looked at after every stage, and the fixed-horizon p-value does not survive repeated looks."""


@dataclass
class ServingStats:
    """Per-arm serving health of one stage: request count, errors, latency samples (ms)."""

    requests: int
    errors: int
    latency_ms: np.ndarray

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p99_ms(self) -> float:
        return float(np.percentile(self.latency_ms, 99)) if self.latency_ms.size else float("nan")


@dataclass
class Decision:
    action: str
    """promote, ramp, hold or rollback."""
    candidate: str
    live: str
    stage: int
    traffic: float
    simulated_day: int
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)
    at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rollout_config(live: str, candidate: str, share: float, policy: RolloutPolicy, name: str,
                   start: datetime | None = None) -> ExperimentsConfig:
    """The rollout experiment: live vs candidate, ``share`` of users on each arm, in its own layer."""
    return ExperimentsConfig.model_validate({
        "default_model": live,
        "holdout": {"fraction": 0.0, "salt": f"{name}-holdout"},
        "layers": [{"name": "rollout", "salt": f"{name}-layer", "experiments": [{
            "name": name, "salt": f"{name}-v1", "buckets": [0, 10_000], "traffic": min(1.0, 2 * share),
            "start": start,
            "variants": [{"name": CONTROL, "weight": 1, "model": live}, {"name": CANDIDATE, "weight": 1, "model": candidate}],
            "metrics": [policy.primary_metric, "gmv_per_user"], "primary_metric": policy.primary_metric,
            "guardrails": [{"metric": "gmv_per_user", "margin": policy.gmv_margin}],
            "analysis": {"target_lift": policy.target_lift, "min_units_per_arm": policy.min_units_per_arm,
                         "cuped": True, "pre_period_days": 7, "correction": "none"},
        }]}],
    })


def _quantile_bounds(samples: np.ndarray, q: float, z: float = 1.96) -> tuple[float, float]:
    """Distribution-free 95% interval of a quantile from order statistics (binomial normal approximation);
    an end beyond the sample is unknown (0 or +inf): too few samples to bound a tail quantile."""
    x = np.sort(samples)
    n = x.size
    if n == 0:
        return 0.0, float("inf")
    half = z * math.sqrt(n * q * (1 - q))
    lo, hi = int(math.floor(n * q - half)) - 1, int(math.ceil(n * q + half))
    return (float(x[lo]) if lo >= 0 else 0.0), (float(x[hi]) if hi < n else float("inf"))


def serving_guardrails(control: ServingStats, candidate: ServingStats, policy: RolloutPolicy) -> dict[str, Any]:
    """Latency and error-rate checks (pure). Each is ``ok`` (shown within its limit), ``harm`` (shown
    beyond it) or ``pending`` (not yet shown either way); ``status`` is the worst of the two."""
    limit_ms = (1 + policy.latency_margin) * control.p99_ms
    lo, hi = _quantile_bounds(candidate.latency_ms, 0.99)
    latency = "harm" if lo > limit_ms else "ok" if hi <= limit_ms else "pending"
    p1, n1, p0, n0 = candidate.error_rate, max(candidate.requests, 1), control.error_rate, max(control.requests, 1)
    diff = p1 - p0
    se = math.sqrt(max(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0, 1e-12))
    lower, upper = diff - 1.645 * se, diff + 1.645 * se
    errors = "harm" if lower > policy.error_margin else "ok" if upper <= policy.error_margin else "pending"
    status = "harm" if "harm" in (latency, errors) else "pending" if "pending" in (latency, errors) else "ok"
    return {"status": status,
            "latency": {"status": latency, "p99_ms_control": control.p99_ms, "p99_ms_candidate": candidate.p99_ms,
                        "p99_ms_candidate_ci": [lo, hi], "ratio": candidate.p99_ms / control.p99_ms,
                        "limit_ratio": 1 + policy.latency_margin},
            "errors": {"status": errors, "rate_control": p0, "rate_candidate": p1, "diff_ci_90": [lower, upper],
                       "limit": policy.error_margin}}


def decide(readout, serving: dict[str, Any], stage: int, stage_days_run: int, policy: RolloutPolicy) -> tuple[str, str]:
    """(action, reason) from one readout and the serving guardrails (pure; see the module docstring)."""
    if not readout.valid:
        return "rollback", "invalid split (sample ratio mismatch): " + readout.summary
    if serving["status"] == "harm":
        failed = [k for k in ("latency", "errors") if serving[k]["status"] == "harm"]
        return "rollback", f"serving guardrail harmed: {', '.join(failed)}"
    verdict = next((v for v in readout.verdicts if v.variant == CANDIDATE), None)
    if verdict is None:
        return "rollback", "the readout has no verdict for the candidate"
    if verdict.verdict == "ship" and serving["status"] == "pending":
        verdict_text = f"{verdict.headline} Serving guardrails not yet shown within limits."
        if stage_days_run >= policy.max_stage_days:
            return "rollback", f"no decision after {stage_days_run} simulated days at this stage: {verdict_text}"
        return "hold", verdict_text
    if verdict.verdict == "ship":
        primary = next(c for c in readout.comparisons
                       if c.role == "metric" and c.metric == policy.primary_metric and c.variant == CANDIDATE)
        if policy.always_valid and not primary.seq_p_value < readout.alpha:
            text = (f"{verdict.headline} Not yet significant by the always-valid test "
                    f"(p = {primary.seq_p_value:.3g}).")
            if stage_days_run >= policy.max_stage_days:
                return "rollback", f"no decision after {stage_days_run} simulated days at this stage: {text}"
            return "hold", text
        last = stage == len(policy.stages) - 1
        return ("promote" if last else "ramp"), verdict.headline
    if verdict.verdict == "keep running":
        if stage_days_run >= policy.max_stage_days:
            return "rollback", f"no decision after {stage_days_run} simulated days at this stage: {verdict.headline}"
        return "hold", verdict.headline
    return "rollback", verdict.headline


def evidence(readout, serving: dict[str, Any]) -> dict[str, Any]:
    """The numbers a decision rests on: per-metric lifts with intervals, guardrails, units per arm."""
    rows = {}
    for c in readout.comparisons:
        if c.variant != CANDIDATE:
            continue
        rows[f"{c.role}:{c.metric}"] = {"rel_lift": c.rel_lift, "rel_ci": list(c.rel_ci), "p_value": c.p_value,
                                        "always_valid_p_value": c.seq_p_value,
                                        "decision": c.decision, "n_control": c.n_control, "n_candidate": c.n_treatment}
    return {"units": readout.units, "srm_valid": readout.valid, "comparisons": rows, "serving": serving,
            "verdicts": [v.headline for v in readout.verdicts]}


def report_line(d: Decision) -> str:
    c = d.evidence.get("comparisons", {})
    primary = next((v for k, v in c.items() if k.startswith("metric:")), None)
    gmv = c.get("guardrail:gmv_per_user")
    lat = d.evidence.get("serving", {}).get("latency", {})

    def pct(x: float) -> str:
        return "n/a" if x is None or not math.isfinite(x) else f"{x * 100:+.1f}%"

    bits = [f"day {d.simulated_day:3d}", f"stage {d.stage} ({d.traffic:.0%} of users)", d.action.upper(),
            f"{d.candidate} vs {d.live}"]
    if primary:
        bits.append(f"CTR {pct(primary['rel_lift'])} [{pct(primary['rel_ci'][0])}, {pct(primary['rel_ci'][1])}]")
    if gmv:
        bits.append(f"GMV/user {pct(gmv['rel_lift'])} ({gmv['decision']})")
    if lat:
        bits.append(f"p99 x{lat.get('ratio', float('nan')):.2f}")
    return " | ".join(bits) + f" | {d.reason}"


# ------------------------------------------------------------------------------------------ simulation


@dataclass(frozen=True)
class SimulatedCandidate:
    """SIMULATION: what a candidate does to users and to the service (injected, known effects)."""

    ctr_effect: float = 0.0
    latency_multiplier: float = 1.0
    error_rate: float = 0.001


def _serving_stats(rng: np.random.Generator, requests: int, multiplier: float, error_rate: float) -> ServingStats:
    latency = rng.lognormal(math.log(8.0), 0.35, size=max(requests, 1)) * multiplier
    return ServingStats(requests, int(rng.binomial(requests, error_rate)), latency)


def simulate_rollout(live: str, candidate: str, behaviour: SimulatedCandidate, policy: RolloutPolicy,
                     n_units: int = 20_000, seed: int = 0, features_dir=None,
                     on_decision: Callable[[Decision], None] | None = None,
                     baseline: SimulatedCandidate = SimulatedCandidate()) -> list[Decision]:
    """Run the guarded rollout of ``candidate`` on the synthetic marketplace until promote or roll back."""
    from abtest.analysis import analyze
    from abtest.events import MemorySink
    from abtest.simulator import DEFAULT_START, Effect, MarketplaceSimulator, PriceModel, PurchaseModel, SimulationConfig

    name = f"rollout_{candidate}"
    rng = np.random.default_rng(seed)
    decisions: list[Decision] = []
    day, stage, previous = 0, 0, None
    stage_days_run = 0
    while True:
        share = policy.stages[stage]
        start = DEFAULT_START + timedelta(days=day)
        config = rollout_config(live, candidate, share, policy, name, start=None)
        if previous is not None:
            problems = check_ramp(previous, config)
            if problems:
                raise RuntimeError(f"the ramp would move assigned users: {problems}")
        previous = config
        stage_days_run += policy.stage_days
        sim_cfg = SimulationConfig(experiment=name, n_units=n_units, days=stage_days_run, pre_days=7, start=start,
                                   effects={CANDIDATE: Effect(ctr=behaviour.ctr_effect)}, seed=seed * 1000 + stage,
                                   features_dir=features_dir, price=PriceModel(sigma=0.5),
                                   purchase=PurchaseModel(base_rate=0.3))
        sink = MemorySink()
        MarketplaceSimulator(sim_cfg, config).simulate_direct(sink)
        exposures, outcomes = sink.exposures(), sink.outcomes()
        readout = analyze(config, name, exposures, outcomes, timeline=False)
        arm_requests = {v: int(exposures.filter(exposures["variant"] == v).height) for v in (CONTROL, CANDIDATE)}
        serving = serving_guardrails(
            _serving_stats(rng, arm_requests[CONTROL], baseline.latency_multiplier, baseline.error_rate),
            _serving_stats(rng, arm_requests[CANDIDATE], behaviour.latency_multiplier, behaviour.error_rate),
            policy)
        action, reason = decide(readout, serving, stage, stage_days_run, policy)
        d = Decision(action, candidate, live, stage, share, day + stage_days_run, reason, evidence(readout, serving),
                     at=(start + timedelta(days=stage_days_run)).isoformat())
        decisions.append(d)
        if on_decision is not None:
            on_decision(d)
        if action in ("promote", "rollback"):
            return decisions
        if action == "ramp":
            day += stage_days_run
            stage, stage_days_run = stage + 1, 0
