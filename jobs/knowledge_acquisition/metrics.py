"""Effectivity, retainability and forgetting-curve fits: pure functions over probe trajectories.

Definitions follow the paper (Sec. 3): ell(q; theta_t) is the mean log-probability of the target
span of probe q at step t. For an injection at step t_i, the local acquisition maximum is
t_LAM = argmax_{t_i < t <= t_i + window} ell(q; theta_t), and the effectivity is
E = ell(q; theta_{t_LAM}) - ell(q; theta_{t_i}) (the immediate gain over the pre-injection value).
Retainability after the last injection, R(t) = (ell(t_LAM + t) - ell_0) / (ell(t_LAM) - ell_0),
is the share of the acquired gain still present t steps later, with ell_0 the value before the
first injection. The paper fits R(t) = -a ln t + b and calls a the decay constant; we also
compare a power law c t^-alpha with an exponential c exp(-t / tau) by R^2.

One departure, said here: a group's curve is the ratio of means
mean(ell(t_LAM+t) - ell_0) / mean(ell(t_LAM) - ell_0) over its probes rather than the mean of
per-probe ratios, because single probes with a near-zero gain make the per-probe ratio explode at
this scale (the paper averages thousands of probes).
"""
from __future__ import annotations

import math

import numpy as np


def value_at(steps: list[int], values: list[float], step: int) -> float:
    """The trajectory's value at `step`, linearly interpolated between evaluated steps."""
    return float(np.interp(step, steps, values))


def acquisition(steps: list[int], values: list[float], injection: int, window: int) -> tuple[int, float, float]:
    """(t_LAM, ell at t_LAM, effectivity) for one injection at state `injection`."""
    s = np.asarray(steps)
    v = np.asarray(values)
    inside = (s > injection) & (s <= injection + window)
    if not inside.any():
        raise ValueError(f"no evaluation in the window ({injection}, {injection + window}]")
    k = int(np.argmax(np.where(inside, v, -np.inf)))
    return int(s[k]), float(v[k]), float(v[k] - value_at(steps, values, injection))


def retention_curve(trajectories: list[tuple[list[int], list[float]]], injections: list[list[int]],
                    window: int, offsets: list[int]) -> list[float]:
    """Group retainability R(t) at each t in `offsets`, after each probe's last injection (ratio of means)."""
    gains, kept = [], []
    for (steps, values), inj in zip(trajectories, injections):
        base = value_at(steps, values, inj[0])
        t_lam, top, _ = acquisition(steps, values, inj[-1], window)
        gains.append(top - base)
        kept.append([value_at(steps, values, t_lam + t) - base for t in offsets])
    denom = float(np.mean(gains))
    if denom <= 0:
        return [float("nan")] * len(offsets)
    return [float(x) for x in np.mean(np.asarray(kept), axis=0) / denom]


def _r2(y: np.ndarray, fit: np.ndarray) -> float:
    ss = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - fit) ** 2)) / ss if ss > 0 else float("nan")


def fit_forgetting(offsets: list[int], retention: list[float]) -> dict:
    """Fit the paper's R = -a ln t + b, a power law and an exponential; report parameters and R^2."""
    from scipy.optimize import curve_fit

    t = np.asarray(offsets, dtype=float)
    r = np.asarray(retention, dtype=float)
    ok = np.isfinite(r)
    t, r = t[ok], r[ok]
    out: dict = {"n": int(len(t))}
    if len(t) < 4:
        return out
    a_neg, b = np.polyfit(np.log(t), r, 1)
    out["decay_constant"] = float(-a_neg)
    out["log_fit_r2"] = _r2(r, a_neg * np.log(t) + b)
    c0 = max(float(r[0]), 1e-3)
    try:
        (c, alpha), _ = curve_fit(lambda x, c, al: c * np.power(x, -al), t, r, p0=(c0, 0.1), maxfev=20000)
        out.update(power_c=float(c), power_alpha=float(alpha), power_r2=_r2(r, c * np.power(t, -alpha)))
    except RuntimeError:
        out["power_r2"] = float("nan")
    try:
        (c, tau), _ = curve_fit(lambda x, c, ta: c * np.exp(-x / ta), t, r, p0=(c0, float(t.max())),
                                bounds=([-np.inf, 1e-6], [np.inf, np.inf]), maxfev=20000)
        out.update(exp_c=float(c), exp_tau=float(tau), exp_r2=_r2(r, c * np.exp(-t / tau)))
    except RuntimeError:
        out["exp_r2"] = float("nan")
    return out


def log_offsets(max_t: int, n: int) -> list[int]:
    """About n distinct integer offsets from 1 to max_t, evenly spaced in log t."""
    return sorted({int(round(x)) for x in np.geomspace(1, max_t, n)}) if max_t >= 1 else []


def finite_mean(xs) -> float:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.mean(xs)) if xs else float("nan")
