"""Perception-R1's analysis from the runs: before/after rates with Wilson intervals (pooled over
seeds, paired items), McNemar's exact test before vs after, reward curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobs.reasoning.stats import mcnemar_exact, proportion

METRICS = ("perception", "accuracy", "format")


def summarize(runs: list[dict[str, Any]], alpha: float = 0.05) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for reward in sorted({r["reward"] for r in runs}):
        mine = [r for r in runs if r["reward"] == reward]
        entry: dict[str, Any] = {"seeds": len(mine), "before": {}, "after": {}, "mcnemar": {}}
        for key in METRICS:
            before = [x for r in mine for x in r["before"][key]]
            after = [x for r in mine for x in r["after"][key]]
            entry["before"][key] = proportion(sum(before), len(before))
            entry["after"][key] = proportion(sum(after), len(after))
            entry["mcnemar"][key] = mcnemar_exact([bool(x) for x in before], [bool(x) for x in after])
        curves = [r["curve"]["reward"] for r in mine]
        tenth = max(1, len(curves[0]) // 10)
        entry["reward_first_tenth"] = sum(sum(c[:tenth]) / tenth for c in curves) / len(curves)
        entry["reward_last_tenth"] = sum(sum(c[-tenth:]) / tenth for c in curves) / len(curves)
        entry["seconds"] = sum(r["seconds"] for r in mine)
        out[reward] = entry
    return out


def _pct(p: dict[str, float]) -> str:
    return f"{p['rate']:.1%} [{p['low']:.1%}, {p['high']:.1%}]"


def markdown_table(summary: dict[str, Any]) -> str:
    rows = ["| reward | perception before | perception after | McNemar p (b→w / w→r) | accuracy before | accuracy after "
            "| McNemar p | reward first→last tenth |", "|---|---|---|---|---|---|---|---|"]
    for reward, s in summary.items():
        mp, ma = s["mcnemar"]["perception"], s["mcnemar"]["accuracy"]
        rows.append(f"| {reward.replace('_', ' + ')} | {_pct(s['before']['perception'])} | {_pct(s['after']['perception'])} "
                    f"| {mp['p_value']:.2g} ({mp['b_right_to_wrong']} / {mp['c_wrong_to_right']}) "
                    f"| {_pct(s['before']['accuracy'])} | {_pct(s['after']['accuracy'])} | {ma['p_value']:.2g} "
                    f"| {s['reward_first_tenth']:.2f} → {s['reward_last_tenth']:.2f} |")
    return "\n".join(rows) + "\n\nRates: greedy responses on held-out figures, pooled over seeds, 95% Wilson intervals."


def plot_curves(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    colours = {"accuracy_format": "tab:blue", "accuracy_format_perception": "tab:red"}
    for ax, key in zip(axes, ("reward", "accuracy", "perception")):
        for run in runs:
            ys = run["curve"][key]
            k = max(1, len(ys) // 30)
            smooth = [sum(ys[max(0, i - k):i + 1]) / len(ys[max(0, i - k):i + 1]) for i in range(len(ys))]
            label = run["reward"].replace("_", " + ") if run["seed"] == min(r["seed"] for r in runs) else None
            ax.plot(smooth, color=colours.get(run["reward"], "gray"), alpha=0.8, label=label)
        ax.set_title({"reward": "total reward (own variant)", "accuracy": "accuracy reward",
                      "perception": "perception reward (judged for both)"}[key])
        ax.set_xlabel("GRPO step")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
