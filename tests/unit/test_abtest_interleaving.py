"""Team-draft interleaving: construction invariants, credit, sign test, bootstrap, and power on a simulated pair of rankers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from abtest.interleaving import A, B, analyze_interleaving, bootstrap_mean, credit, per_unit, sign_test, team_draft


def test_team_draft_invariants():
    rng = np.random.default_rng(0)
    for _ in range(200):
        items = list(range(30))
        a = list(rng.permutation(items))
        b = list(rng.permutation(items))
        out, teams = team_draft(a, b, 10, rng)
        assert len(out) == 10 and len(set(out)) == 10
        assert abs(int(np.sum(teams == A)) - int(np.sum(teams == B))) <= 1
        # each team's picks appear in its own ranking order, and each pick was that ranker's best remaining item
        shown = set()
        for item, team in zip(out, teams):
            ranking = a if team == A else b
            best = next(x for x in ranking if x not in shown)
            assert item == best
            shown.add(item)


def test_identical_rankings_give_no_preference_in_expectation():
    rng = np.random.default_rng(1)
    r = list(range(20))
    teams = np.array([team_draft(r, r, 10, rng)[1] for _ in range(4000)])
    # every position is A or B with probability 1/2
    assert np.all(np.abs(teams.mean(axis=0) - 0.5) < 0.05)


def test_short_rankings_and_credit():
    rng = np.random.default_rng(2)
    out, teams = team_draft([1, 2], [2, 3, 4], 10, rng)
    assert sorted(out) == [1, 2, 3, 4]
    assert credit(np.array([A, B, A, B]), np.array([1, 1, 0, 1])) == (1, 2)


def test_sign_test_and_bootstrap_against_scipy():
    assert sign_test(60, 40) == pytest.approx(sps.binomtest(60, 100, 0.5).pvalue)
    assert sign_test(0, 0) == 1.0
    rng = np.random.default_rng(3)
    v = rng.normal(0.3, 1, 400)
    (lo, hi), p = bootstrap_mean(v, 4000, rng=np.random.default_rng(4))
    se = v.std(ddof=1) / np.sqrt(v.size)
    assert lo == pytest.approx(v.mean() - 1.96 * se, abs=0.3 * se)
    assert hi == pytest.approx(v.mean() + 1.96 * se, abs=0.3 * se)
    assert p < 0.01


def test_per_unit_aggregation():
    ca, cb = per_unit(np.array([5, 3, 5, 3, 9]), np.array([1, 0, 2, 1, 0.0]), np.array([0, 1, 0, 0, 1.0]))
    assert ca.tolist() == [1.0, 3.0, 0.0] and cb.tolist() == [1.0, 0.0, 1.0]


def _simulate(rng, n_units, noise_a, noise_b, requests_per_unit=3, k=10, n_cand=30):
    """Position-based clicks on true relevance; ranker X sees relevance + noise_X."""
    units, ca, cb = [], [], []
    for u in range(n_units):
        for _ in range(requests_per_unit):
            rel = rng.normal(-2.5, 1.0, n_cand)
            a = list(np.argsort(-(rel + noise_a * rng.standard_normal(n_cand))))
            b = list(np.argsort(-(rel + noise_b * rng.standard_normal(n_cand))))
            items, teams = team_draft(a, b, k, rng)
            p = 1 / (1 + np.exp(-rel[items])) / (1 + np.arange(len(items))) ** 0.8
            clicks = rng.random(len(items)) < p
            x, y = credit(teams, clicks)
            units.append(u)
            ca.append(x)
            cb.append(y)
    return np.array(units), np.array(ca), np.array(cb)


def test_detects_the_better_ranker_and_stays_calibrated_under_the_null():
    rng = np.random.default_rng(5)
    r = analyze_interleaving(*_simulate(rng, 600, 0.3, 2.0), n_boot=1000)
    assert r.preference > 0 and r.mean_credit_diff > 0
    assert r.sign_test_p < 0.01 and r.bootstrap_p < 0.01 and r.bootstrap_ci[0] > 0
    null = analyze_interleaving(*_simulate(rng, 400, 1.0, 1.0), n_boot=500)
    assert null.bootstrap_ci[0] < 0 < null.bootstrap_ci[1]
    assert r.wins_a + r.wins_b + r.ties == r.requests
