"""O²-Searcher's comparison from the variants' evaluations: means with t-intervals, curves."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from jobs.reasoning.stats import mean_interval

ROWS = ("open_f1", "open_format", "open_diversity", "open_searched", "closed_em", "closed_searched")


def summarize(variants: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for v in variants:
        entry: dict[str, Any] = {k: mean_interval(vals) for k, vals in v["eval"].items()}
        curve = v["curve"].get("reward", [])
        if curve:
            q = max(1, len(curve) // 4)
            entry["reward_first_quarter"] = sum(curve[:q]) / q
            entry["reward_last_quarter"] = sum(curve[-q:]) / q
        entry["seconds"] = v["seconds"]
        out[v["variant"]] = entry
    return out


def markdown_table(summary: dict[str, Any]) -> str:
    head = "| variant | " + " | ".join(ROWS) + " | training reward first → last quarter | seconds |"
    rows = [head, "|---|" + "---|" * (len(ROWS) + 2)]
    for variant, s in summary.items():
        cells = [f"{s[k]['mean']:.3f} ± {s[k]['half_width']:.3f}" if k in s and not math.isnan(s[k]["mean"]) else "–"
                 for k in ROWS]
        trend = (f"{s['reward_first_quarter']:.3f} → {s['reward_last_quarter']:.3f}" if "reward_first_quarter" in s else "–")
        rows.append(f"| {variant} | " + " | ".join(cells) + f" | {trend} | {s['seconds']:.0f} |")
    return "\n".join(rows) + "\n\nMeans over held-out questions ± the half-width of a 95% t-interval."


def plot_curves(variants: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for v in variants:
        for ax, key in zip(axes, ("reward", "format")):
            ys = v["curve"].get(key)
            if ys:
                ax.plot(ys, label=v["variant"], marker=".")
                ax.set_title(f"training {key} (mean over the step's rollouts)")
                ax.set_xlabel("GRPO step")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
