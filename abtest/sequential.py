"""Sequential testing: the normal-mixture mSPRT, so an experiment can be read at every look.

A fixed-horizon test (abtest/stats.py) is only valid at its planned sample size; these
always-valid p-values and confidence sequences stay valid under continuous monitoring.
Mixture variance ``tau2``: always-valid p-value ``min(1, 1/Lambda)`` and confidence sequence
``est +- sqrt(v (v + tau2) / tau2 * (2 log(1/alpha) + log((v + tau2) / v)))`` (Johari et al.
2017; Howard et al. 2021). ``tau2_for_horizon`` picks tau2 as GrowthBook does (tightest at a
planned sample size). Re-exported by ``abtest.stats``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ArrayLike = float | np.ndarray


def tau2_for_horizon(variance: ArrayLike, n: ArrayLike, n_star: float, alpha: float = 0.05) -> ArrayLike:
    """Mixing variance that makes the confidence sequence tightest at ``n_star`` units.

    ``rho^2 = (-2 log alpha + log(-2 log alpha + 1)) / n_star`` (Waudby-Smith et al. 2023,
    eq. 161, as in GrowthBook) and ``tau2 = rho^2 * variance * n`` (the per-unit variance
    of the estimate times rho^2).
    """
    rho2 = (-2 * np.log(alpha) + np.log(-2 * np.log(alpha) + 1)) / n_star
    return rho2 * variance * n


def msprt_pvalue(estimate: ArrayLike, variance: ArrayLike, tau2: ArrayLike, null: float = 0.0) -> ArrayLike:
    """Always-valid p-value ``min(1, 1 / Lambda)`` of the normal-mixture SPRT at one look.

    ``Lambda = sqrt(v / (v + tau2)) * exp(tau2 (est - null)^2 / (2 v (v + tau2)))``.
    Take the running minimum over looks (``always_valid``) for the sequence.
    """
    d2 = np.square(estimate - null)
    log_lambda = 0.5 * np.log(variance / (variance + tau2)) + tau2 * d2 / (2 * variance * (variance + tau2))
    return np.minimum(1.0, np.exp(-log_lambda))


def msprt_halfwidth(variance: ArrayLike, tau2: ArrayLike, alpha: float = 0.05) -> ArrayLike:
    """Half-width of the (1 - alpha) confidence sequence at one look."""
    return np.sqrt(variance * (variance + tau2) / tau2 * (2 * np.log(1 / alpha) + np.log((variance + tau2) / variance)))


def always_valid(pvalues: np.ndarray, lower: np.ndarray | None = None, upper: np.ndarray | None = None, axis: int = -1):
    """Running minimum of the p-values and running intersection of the intervals along ``axis``."""
    p = np.minimum.accumulate(pvalues, axis=axis)
    if lower is None or upper is None:
        return p
    return p, np.maximum.accumulate(lower, axis=axis), np.minimum.accumulate(upper, axis=axis)


@dataclass(frozen=True)
class SequentialResult:
    estimate: float
    p_value: float
    ci: tuple[float, float]
    tau2: float


def sequential_test(estimate: float, variance: float, n: int, n_star: float, alpha: float = 0.05) -> SequentialResult:
    """mSPRT at one look, tau2 tuned for ``n_star`` total units."""
    tau2 = float(tau2_for_horizon(variance, n, n_star, alpha))
    p = float(msprt_pvalue(estimate, variance, tau2))
    h = float(msprt_halfwidth(variance, tau2, alpha))
    return SequentialResult(float(estimate), p, (float(estimate - h), float(estimate + h)), tau2)
