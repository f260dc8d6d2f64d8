"""`recast forecast plot`: PNGs of actual vs base vs revised forecasts, with the estimated error δ.

Reads the revised-forecast and actuals topics from the beginning (or takes
the records directly), picks ``n`` forecasts of one series whose horizon has
been observed (evenly spaced in time, plus the one with the largest δ), and
draws, per forecast, the actuals over the input window and the horizon, the
base forecast and PIR's revision; the title gives δ per channel, the
warning flag and the MSE of both. matplotlib (Agg backend, no display).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from forecasting.events import ActualV1, RevisedForecastV1, decode
from recast.settings import Settings
from streaming.topics import read_topic_values as read_topic


def _decoded(values, kind: str) -> list:
    """Every record that decodes as ``kind``; anything else (malformed, hostile, another kind) is skipped."""
    out = []
    for v in values:
        try:
            out.append(decode(v, (kind,)))
        except Exception:  # noqa: BLE001 - a bad record on a topic must not stop a plot
            continue
    return out


def collect(settings: Settings) -> tuple[list[RevisedForecastV1], list[ActualV1]]:
    f = settings.forecast
    return (_decoded(read_topic(settings, f.revised_topic), "revised_forecast"),
            _decoded(read_topic(settings, f.actuals_topic), "actual"))


def choose(revised: Sequence[RevisedForecastV1], observed: dict[int, np.ndarray], n: int) -> list[RevisedForecastV1]:
    complete = [r for r in revised
                if all(r.ts_ms + (j + 1) * r.step_ms in observed for j in range(len(r.revised)))]
    complete.sort(key=lambda r: r.ts_ms)
    if not complete:
        return []
    picks = [complete[int(i)] for i in np.linspace(0, len(complete) - 1, max(1, n - 1)).round()]
    worst = max(complete, key=lambda r: max(r.delta))
    if worst not in picks:
        picks.append(worst)
    return picks[:n] if len(picks) > n else picks


def plot_forecasts(revised: Sequence[RevisedForecastV1], actuals: Sequence[ActualV1], out_dir: Path,
                   n: int = 4, series: str | None = None, columns: Sequence[str] | None = None,
                   lookback: int = 96) -> list[Path]:
    """One PNG per chosen forecast (all channels stacked); returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = series or (revised[0].series if revised else None)
    revised = [r for r in revised if r.series == series]
    observed = {a.ts_ms: np.asarray(a.values) for a in actuals if a.series == series}
    picks = choose(revised, observed, n)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in picks:
        base, rev = np.asarray(r.base), np.asarray(r.revised)
        h, c = rev.shape
        hz = [r.ts_ms + (j + 1) * r.step_ms for j in range(h)]
        past = [r.ts_ms - j * r.step_ms for j in range(lookback - 1, -1, -1)]
        truth = np.asarray([observed[t] for t in hz])
        hist_ts = [t for t in past if t in observed]
        hist = np.asarray([observed[t] for t in hist_ts]) if hist_ts else np.zeros((0, c))
        names = list(columns or [f"ch{i}" for i in range(c)])
        fig, axes = plt.subplots(c, 1, figsize=(10, 2.6 * c + 0.6), squeeze=False, sharex=True)
        to_h = lambda ts: (np.asarray(ts) - r.ts_ms) / r.step_ms  # noqa: E731  steps from the origin
        for i in range(c):
            ax = axes[i][0]
            if len(hist):
                ax.plot(to_h(hist_ts), hist[:, i], color="0.55", lw=1, label="actual (input)")
            ax.plot(to_h(hz), truth[:, i], color="black", lw=1.5, label="actual")
            ax.plot(to_h(hz), base[:, i], color="tab:blue", lw=1.2, ls="--", label="base")
            ax.plot(to_h(hz), rev[:, i], color="tab:red", lw=1.4, label="revised (PIR)")
            ax.axvline(0, color="0.8", lw=0.8)
            b_mse = float(np.mean((base[:, i] - truth[:, i]) ** 2))
            r_mse = float(np.mean((rev[:, i] - truth[:, i]) ** 2))
            flag = " WARNING" if names[i] in r.warning_channels else ""
            ax.set_title(f"{names[i]}: δ={r.delta[i]:.3f}{flag}   MSE base {b_mse:.4g} -> revised {r_mse:.4g}",
                         fontsize=9, color="tab:red" if flag else "black")
            ax.legend(fontsize=7, loc="upper left")
        axes[-1][0].set_xlabel(f"steps from the forecast origin ({r.step_ms // 1000}s per step)")
        stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.ts_ms / 1000))
        fig.suptitle(f"{series} forecast at {stamp} ({r.model}, store {r.store_pairs} pairs)", fontsize=10)
        fig.tight_layout()
        path = out_dir / f"{series}_{r.ts_ms}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_from_kafka(settings: Settings, out_dir: Path | None = None, n: int = 4,
                    series: str | None = None) -> dict[str, Any]:
    import json

    revised, actuals = collect(settings)
    f = settings.forecast
    columns, lookback = None, 96
    meta = settings.path(f.bundle_dir) / "forecast.json"
    if meta.exists():
        m = json.loads(meta.read_text())
        columns, lookback = m["columns"], m["seq_len"]
    out = out_dir or settings.path(f.plots_dir)
    paths = plot_forecasts(revised, actuals, out, n=n, series=series, columns=columns, lookback=lookback)
    return {"revised": len(revised), "actuals": len(actuals), "plots": [str(p) for p in paths]}
