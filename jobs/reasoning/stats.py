"""Small statistics over counts, as pure functions: proportions with Wilson intervals, McNemar's
exact test on paired binary outcomes, and agreement of two judges (Cohen's κ)."""

from __future__ import annotations

import math

from scipy import stats as _st


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion: honest near 0 and 1 and for small n,
    where the normal interval collapses to a point. (nan, nan) when n == 0."""
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} outside [0, n={n}]")
    z = _st.norm.ppf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def proportion(successes: int, n: int, confidence: float = 0.95) -> dict[str, float]:
    low, high = wilson_interval(successes, n, confidence)
    return {"k": successes, "n": n, "rate": successes / n if n else math.nan, "low": low, "high": high}


def mcnemar_exact(before: list[bool], after: list[bool]) -> dict[str, float]:
    """McNemar's test of paired binary outcomes (the same items before and after training):
    only discordant pairs count; b = right before and wrong after, c = wrong before and right
    after. Exact two-sided binomial p-value of min(b, c) under Binomial(b + c, 1/2)."""
    if len(before) != len(after):
        raise ValueError(f"paired outcomes need equal lengths, got {len(before)} and {len(after)}")
    b = sum(1 for x, y in zip(before, after) if x and not y)
    c = sum(1 for x, y in zip(before, after) if y and not x)
    n = b + c
    p = 1.0 if n == 0 else float(min(1.0, 2 * _st.binom.cdf(min(b, c), n, 0.5)))
    return {"b_right_to_wrong": b, "c_wrong_to_right": c, "p_value": p}


def cohen_kappa(a: list[bool], b: list[bool]) -> dict[str, float]:
    """Raw agreement and Cohen's κ of two binary judges on the same items."""
    if len(a) != len(b) or not a:
        raise ValueError("two non-empty label lists of equal length are needed")
    n = len(a)
    agree = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    chance = pa * pb + (1 - pa) * (1 - pb)
    kappa = 1.0 if chance >= 1.0 else (agree - chance) / (1 - chance)
    return {"n": n, "agreement": agree, "kappa": kappa}


def mean_interval(values: list[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean with the half-width of a Student-t interval (nan half-width for fewer than 2 values)."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": math.nan, "half_width": math.nan, "low": math.nan, "high": math.nan}
    mean = sum(values) / n
    if n < 2:
        return {"n": n, "mean": mean, "half_width": math.nan, "low": math.nan, "high": math.nan}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(_st.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "half_width": half, "low": mean - half, "high": mean + half}
