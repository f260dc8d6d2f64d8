"""Team-draft interleaving: compare two rankers on the *same* requests.

Team draft (Radlinski, Kurup & Joachims 2008): the two rankings take turns like
captains picking teams; whichever team has fewer picks goes next, a coin decides
ties; each picks its highest-ranked item not already shown. Clicks are credited to
the team that contributed the clicked item. A request is won by the ranker with more
credited clicks (ties: equal credit, usually no clicks).

Inference, per *unit* (user) to respect within-user dependence:

* the preference ``delta = (wins_A + ties / 2) / n - 1/2`` over requests
  (Chapelle et al. 2012), and per-unit credit differences;
* a sign test: binomial test of the units that prefer A among units with a preference;
* a bootstrap over units of the mean per-unit credit difference (percentile interval).

Because both rankers are judged on the same user and the same request, the
between-user variance that dominates an A/B test cancels: ``benchmarks/abtest_interleaving.py``
shows how many fewer users that needs on the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as sps

A, B = 0, 1


def team_draft(ranking_a: Sequence, ranking_b: Sequence, k: int, rng: np.random.Generator) -> tuple[list, np.ndarray]:
    """Interleave two rankings into ``k`` items; returns (items, team per position: 0 = A, 1 = B)."""
    items: list = []
    teams: list[int] = []
    shown: set = set()
    ia = ib = 0
    na = nb = 0
    la, lb = len(ranking_a), len(ranking_b)
    while len(items) < k:
        while ia < la and ranking_a[ia] in shown:
            ia += 1
        while ib < lb and ranking_b[ib] in shown:
            ib += 1
        a_left, b_left = ia < la, ib < lb
        if not (a_left or b_left):
            break
        pick_a = (na < nb or (na == nb and rng.random() < 0.5)) if (a_left and b_left) else a_left
        if pick_a:
            item, na = ranking_a[ia], na + 1
            teams.append(A)
        else:
            item, nb = ranking_b[ib], nb + 1
            teams.append(B)
        items.append(item)
        shown.add(item)
    return items, np.asarray(teams, dtype=np.int8)


def credit(teams: np.ndarray, clicks: np.ndarray) -> tuple[int, int]:
    """Clicks credited to (A, B) for one interleaved list; ``clicks`` is a 0/1 array by position."""
    clicks = np.asarray(clicks, dtype=bool)
    return int(np.sum(clicks & (teams == A))), int(np.sum(clicks & (teams == B)))


@dataclass(frozen=True)
class InterleavingResult:
    units: int
    requests: int
    wins_a: int
    wins_b: int
    ties: int
    preference: float
    """(wins_A + ties/2) / requests - 1/2 over requests: > 0 means A is preferred."""
    units_prefer_a: int
    units_prefer_b: int
    sign_test_p: float
    mean_credit_diff: float
    """Mean over units of (credited clicks A - credited clicks B)."""
    bootstrap_ci: tuple[float, float]
    bootstrap_p: float


def per_unit(unit_index: np.ndarray, credit_a: np.ndarray, credit_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum the per-request credits per unit: (credit A, credit B), one entry per unit present."""
    _, inv = np.unique(unit_index, return_inverse=True)
    return np.bincount(inv, weights=credit_a), np.bincount(inv, weights=credit_b)


def sign_test(prefer_a: int, prefer_b: int) -> float:
    """Two-sided exact binomial (sign) test of p = 1/2 among units with a preference."""
    n = prefer_a + prefer_b
    if n == 0:
        return 1.0
    return float(sps.binomtest(prefer_a, n, 0.5).pvalue)


def bootstrap_mean(values: np.ndarray, n_boot: int = 2000, alpha: float = 0.05, rng: np.random.Generator | None = None) -> tuple[tuple[float, float], float]:
    """Percentile interval of the mean and a two-sided bootstrap p-value for mean = 0
    (share of recentred bootstrap means at least as extreme as the observed one)."""
    rng = rng or np.random.default_rng(0)
    v = np.asarray(values, dtype=np.float64)
    n = v.size
    if n < 2:
        return (float("nan"), float("nan")), 1.0
    idx = rng.integers(0, n, size=(n_boot, n))
    means = v[idx].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    obs = v.mean()
    p = float((np.sum(np.abs(means - obs) >= abs(obs)) + 1) / (n_boot + 1))
    return (float(lo), float(hi)), p


def analyze_interleaving(
    unit_index: np.ndarray, credit_a: np.ndarray, credit_b: np.ndarray, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> InterleavingResult:
    """Readout of an interleaving experiment from per-request credits and the request's unit."""
    ca, cb = np.asarray(credit_a, dtype=np.float64), np.asarray(credit_b, dtype=np.float64)
    wins_a, wins_b = int(np.sum(ca > cb)), int(np.sum(cb > ca))
    ties = int(ca.size - wins_a - wins_b)
    pref = (wins_a + ties / 2) / ca.size - 0.5 if ca.size else float("nan")
    ua, ub = per_unit(np.asarray(unit_index), ca, cb)
    diff = ua - ub
    pa, pb = int(np.sum(diff > 0)), int(np.sum(diff < 0))
    ci, p_boot = bootstrap_mean(diff, n_boot, alpha, np.random.default_rng(seed))
    return InterleavingResult(
        units=int(diff.size), requests=int(ca.size), wins_a=wins_a, wins_b=wins_b, ties=ties, preference=float(pref),
        units_prefer_a=pa, units_prefer_b=pb, sign_test_p=sign_test(pa, pb), mean_credit_diff=float(diff.mean()) if diff.size else float("nan"),
        bootstrap_ci=ci, bootstrap_p=p_boot,
    )
