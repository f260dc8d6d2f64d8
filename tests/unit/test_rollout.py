"""Guarded rollout: the serving guardrails, the ramp, and a candidate that is better for users but slow."""

from __future__ import annotations

import numpy as np

from abtest.config import check_ramp
from abtest.rollout import (
    RolloutPolicy,
    ServingStats,
    SimulatedCandidate,
    report_line,
    rollout_config,
    serving_guardrails,
    simulate_rollout,
)

POLICY = RolloutPolicy()


def _stats(n: int, multiplier: float, errors: int, seed: int) -> ServingStats:
    rng = np.random.default_rng(seed)
    return ServingStats(n, errors, rng.lognormal(np.log(8.0), 0.35, n) * multiplier)


def test_latency_guardrail_ok_harm_and_pending():
    control = _stats(20_000, 1.0, 20, 0)
    assert serving_guardrails(control, _stats(20_000, 1.0, 20, 1), POLICY)["latency"]["status"] == "ok"
    assert serving_guardrails(control, _stats(20_000, 2.0, 20, 1), POLICY)["latency"]["status"] == "harm"
    assert serving_guardrails(control, _stats(30, 1.15, 0, 1), POLICY)["latency"]["status"] == "pending"


def test_error_rate_guardrail_is_a_non_inferiority_bound():
    control = _stats(20_000, 1.0, 20, 0)  # 0.1%
    assert serving_guardrails(control, _stats(20_000, 1.0, 22, 1), POLICY)["errors"]["status"] == "ok"
    assert serving_guardrails(control, _stats(20_000, 1.0, 1000, 1), POLICY)["errors"]["status"] == "harm"
    few = serving_guardrails(control, _stats(300, 1.0, 1, 1), POLICY)
    assert few["errors"]["status"] == "pending" and few["status"] == "pending"


def test_the_ramp_only_adds_users():
    stages = [rollout_config("dlf", "dlf_candidate", share, POLICY, "rollout_x") for share in POLICY.stages]
    for old, new in zip(stages, stages[1:]):
        assert check_ramp(old, new) == []
    _, e = stages[0].find("rollout_x")
    assert e.traffic == 2 * POLICY.stages[0] and [v.model for v in e.variants] == ["dlf", "dlf_candidate"]
    assert check_ramp(stages[1], stages[0])  # going back down would move users


def test_a_candidate_users_like_but_that_is_slow_is_rolled_back():
    lines = []
    decisions = simulate_rollout("dlf", "dlf_candidate", SimulatedCandidate(ctr_effect=0.1, latency_multiplier=2.0),
                                 POLICY, n_units=20_000, seed=3, on_decision=lambda d: lines.append(report_line(d)))
    final = decisions[-1]
    assert final.action == "rollback" and "latency" in final.reason
    assert final.evidence["serving"]["latency"]["status"] == "harm"
    assert final.stage == 0 and final.traffic == POLICY.stages[0]  # stopped before the ramp
    assert len(lines) == len(decisions) and "ROLLBACK" in lines[-1] and "latency" in lines[-1]
