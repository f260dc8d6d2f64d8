"""From the injection cells' probe trajectories to the paper's summary numbers (pure functions)."""
from __future__ import annotations

import numpy as np

from .experiment import REGIMES
from .metrics import acquisition, finite_mean, fit_forgetting, log_offsets, retention_curve, value_at


def probe_series(cell: dict, regime: str, kind: str, drift: tuple[list[int], list[float]] | None = None):
    """(steps, values, injections) of every probe of one regime and probe kind in a cell; with `drift`
    (steps, mean change of the never-injected controls), that drift is subtracted from each value."""
    for d in cell["docs"]:
        if d["regime"] != regime:
            continue
        for k, row in zip(d["kinds"], d["logprob"]):
            if k == kind:
                if drift is not None and drift[0]:
                    row = (np.asarray(row) - np.interp(d["steps"], drift[0], drift[1])).tolist()
                yield d["steps"], row, d["injections"]


def control_drift(cell: dict, kind: str) -> tuple[list[int], list[float]]:
    """Mean change of ell since step 0 over the control documents' probes of one kind.

    At this scale the background training itself still raises (or lowers) every probe's
    log-probability; the paper's OLMo checkpoints are far along, where this drift is small. With
    `subtract_control_drift` the analysis removes it, so effectivity and retainability measure what
    the injection added, not what pretraining on the background was adding anyway.
    """
    return mean_trajectory(cell, "control", kind)


def summarize_cell(cell: dict, window: int, fit_max_t: int, subtract_drift: bool) -> dict:
    """Per regime x probe kind: effectivity (first and mean over injections), retention curve and its fits."""
    out: dict = {"label": cell["label"], "batch_size": cell["batch_size"], "pretrain_steps": cell["pretrain_steps"],
                 "groups": {}}
    offsets = log_offsets(fit_max_t, 25)
    for regime in REGIMES:
        for kind in cell["kinds"]:
            drift = control_drift(cell, kind) if subtract_drift else None
            series = list(probe_series(cell, regime, kind, drift))
            if not series:
                continue
            eff_first, eff_all = [], []
            for steps, vals, inj in series:
                effs = [acquisition(steps, vals, t, window)[2] for t in inj]
                eff_first.append(effs[0])
                eff_all.extend(effs)
            curve = retention_curve([(s, v) for s, v, _ in series], [i for _, _, i in series], window, offsets)
            gains_end = [value_at(s, v, s[-1]) - value_at(s, v, i[0]) for s, v, i in series]
            out["groups"][f"{regime}/{kind}"] = {
                "effectivity_first": finite_mean(eff_first), "effectivity_mean": finite_mean(eff_all),
                "gain_at_end": finite_mean(gains_end), "offsets": offsets, "retention": curve,
                "fit": fit_forgetting(offsets, curve)}
    ctrl = [value_at(d["steps"], row, d["steps"][-1]) - row[0] for d in cell["docs"] if d["regime"] == "control"
            for row in d["logprob"]]
    out["control_drift"] = finite_mean(ctrl)
    return out


def mean_trajectory(cell: dict, regime: str, kind: str) -> tuple[list[int], list[float]]:
    """Mean change of ell since step 0 over a group's probes, on the union of evaluated steps (for plots)."""
    series = list(probe_series(cell, regime, kind))
    grid = sorted({s for steps, _, _ in series for s in steps})
    if not series:
        return [], []
    mean = np.mean([np.interp(grid, s, v) - v[0] for s, v, _ in series], axis=0)
    return grid, [round(float(x), 4) for x in mean]
