"""Power and minimum detectable effect of the readout's test (Welch on the absolute scale, normal
approximation), from per-unit variances: the same arithmetic the report uses for "needs about N more
users per arm", exposed as ``recast abtest power``.

With CUPED the per-unit variance shrinks by the variance reduction ``r`` (``var * (1 - r)``); the
multiplicity correction is not included (plan with a smaller alpha when several metrics decide).
"""

from __future__ import annotations

import math

from scipy import special


def _z(alpha: float, power: float) -> float:
    return float(special.ndtri(1 - alpha / 2) + special.ndtri(power))


def sample_size_per_arm(mean: float, sd: float, lift: float, alpha: float = 0.05, power: float = 0.8,
                        variance_reduction: float = 0.0, sd_treatment: float | None = None) -> float:
    """Users per arm to detect a relative ``lift`` of a metric with control ``mean`` and per-unit ``sd``."""
    if mean == 0 or lift == 0:
        raise ValueError("mean and lift must be non-zero: a relative effect of a zero mean does not exist")
    s_t = sd if sd_treatment is None else sd_treatment
    var = (sd * sd + s_t * s_t) * (1.0 - variance_reduction)
    return _z(alpha, power) ** 2 * var / (lift * mean) ** 2


def minimum_detectable_effect(mean: float, sd: float, n_per_arm: float, alpha: float = 0.05, power: float = 0.8,
                              variance_reduction: float = 0.0) -> float:
    """Smallest relative lift detected with ``power`` at ``n_per_arm`` users per arm."""
    return _z(alpha, power) * math.sqrt(2 * sd * sd * (1.0 - variance_reduction) / n_per_arm) / abs(mean)


def power_at(mean: float, sd: float, lift: float, n_per_arm: float, alpha: float = 0.05, variance_reduction: float = 0.0,
             sd_treatment: float | None = None) -> float:
    """Probability that the two-sided test rejects at a true relative ``lift`` (both tails counted)."""
    s_t = sd if sd_treatment is None else sd_treatment
    se = math.sqrt((sd * sd + s_t * s_t) * (1.0 - variance_reduction) / n_per_arm)
    shift = abs(lift * mean) / se
    z = special.ndtri(1 - alpha / 2)
    return float(special.ndtr(shift - z) + special.ndtr(-z - shift))


__all__ = ["minimum_detectable_effect", "power_at", "sample_size_per_arm"]
