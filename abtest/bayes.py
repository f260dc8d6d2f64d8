"""Bayesian readout of a lift: Gaussian posterior, chance to beat control, expected losses.

A decision-oriented complement to the frequentist tests, computed from the same
estimate and variance. Re-exported by ``abtest.stats``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

ArrayLike = float | np.ndarray


@dataclass(frozen=True)
class BayesResult:
    mean: float
    sd: float
    chance_to_beat_control: float
    expected_loss_treatment: float
    """E[max(0, -lift)]: what shipping the treatment costs when it is worse."""
    expected_loss_control: float
    """E[max(0, lift)]: what keeping the control costs when the treatment is better."""
    credible_interval: tuple[float, float]


def gaussian_posterior(estimate: ArrayLike, variance: ArrayLike, prior_mean: float, prior_var: float, proper: bool = True):
    """Normal prior x normal likelihood -> posterior (mean, variance). ``proper=False``: flat prior."""
    if not proper:
        return estimate, variance
    precision = 1.0 / variance + 1.0 / prior_var
    return (estimate / variance + prior_mean / prior_var) / precision, 1.0 / precision


def expected_losses(mu: ArrayLike, sd: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
    """(E[max(0, -X)], E[max(0, X)]) for X ~ N(mu, sd^2)."""
    z = mu / sd
    pdf, cdf_neg = np.exp(-0.5 * np.square(z)) / np.sqrt(2 * np.pi), special.ndtr(-z)
    loss_t = sd * pdf - mu * cdf_neg
    loss_c = sd * pdf + mu * (1.0 - cdf_neg)
    return loss_t, loss_c


def bayes_readout(
    estimate: float, variance: float, prior_mean: float = 0.0, prior_sd: float = 0.3, proper: bool = True, alpha: float = 0.05
) -> BayesResult:
    """Posterior of the lift (Gaussian prior on the same scale), chance to beat control, expected losses."""
    mu, var = gaussian_posterior(estimate, variance, prior_mean, prior_sd**2, proper)
    sd = float(np.sqrt(var))
    loss_t, loss_c = expected_losses(mu, sd)
    lo, hi = mu + sd * special.ndtri(np.array([alpha / 2, 1 - alpha / 2]))
    return BayesResult(float(mu), sd, float(special.ndtr(mu / sd)), float(loss_t), float(loss_c), (float(lo), float(hi)))
