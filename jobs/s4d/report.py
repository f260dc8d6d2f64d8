"""S4D's verdict, table and plots, from results alone (``recast jobs report`` redraws them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jobs.base import Verdict

MAIN = "clips+static"


def _get(summary: dict, key: str, metric: str) -> float | None:
    return summary.get(key, {}).get(metric)


def table(summary: dict[str, dict[str, float]]) -> str:
    def fmt(v: float | None, sd: float | None) -> str:
        if v is None:
            return "-"
        return f"{100 * v:.1f}" + (f" ± {100 * sd:.1f}" if sd else "")

    lines = ["| pretraining | fine-tuning | dynamic UAR % | dynamic WAR % | static acc % | seeds |", "|---|---|---|---|---|---|"]
    for key, e in summary.items():
        pre, variant = key.split(" | ")
        lines.append(f"| {pre} | {variant} | {fmt(e.get('dynamic_uar'), e.get('dynamic_uar_sd'))} | "
                     f"{fmt(e.get('dynamic_war'), e.get('dynamic_war_sd'))} | "
                     f"{fmt(e.get('static_war'), e.get('static_war_sd'))} | {int(e['seeds'])} |")
    return "\n".join(lines)


def expert_shares(runs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Mean (layers, experts) share of tokens routed first to each expert, per task, MoAE runs
    from the main pretraining."""
    out = {}
    for task in ("dynamic", "static"):
        shares = [np.array(r[task]["expert_share"]) for r in runs
                  if r["variant"] == "moae-mt" and r["pretraining"] == MAIN and "expert_share" in r.get(task, {})]
        if shares:
            out[task] = np.mean(shares, axis=0)
    return out


def verdict(results: dict, cfg: dict) -> Verdict:
    s = results["summary"]
    single = _get(s, f"{MAIN} | single-dynamic", "dynamic_uar")
    vanilla = _get(s, f"{MAIN} | vanilla-mt", "dynamic_uar")
    moae = _get(s, f"{MAIN} | moae-mt", "dynamic_uar")
    clips_only = _get(s, "clips | single-dynamic", "dynamic_uar")
    if None in (single, vanilla, moae):
        return Verdict(None, "Not every fine-tuning variant finished; nothing to compare.", table(s))
    parts = [f"Dynamic-task UAR: single-task {single:.1%}, vanilla multi-task {vanilla:.1%}, multi-task with MoAE {moae:.1%}"]
    parts.append("vanilla multi-task " + ("lost to" if vanilla < single else "did not lose to")
                 + " single-task (the paper's negative transfer " + ("appeared" if vanilla < single else "did not appear") + ")")
    moae_ok = moae >= single and moae > vanilla
    parts.append("MoAE " + ("beat both" if moae_ok else "did not beat both"))
    pre_ok = None
    if clips_only is not None:
        pre_ok = single > clips_only
        parts.append(f"pretraining on clips+static images gave single-task UAR {single:.1%} vs {clips_only:.1%} on clips "
                     "alone" + (" (static data helped)" if pre_ok else " (static data did not help)"))
    shares = expert_shares(results["runs"])
    if shares:
        desc = ", ".join(f"{task} tokens {np.round(v.mean(0), 2).tolist()}" for task, v in shares.items())
        parts.append(f"MoAE first-choice expert shares (mean over layers): {desc}")
    held = True if moae_ok and pre_ok is not False else (False if not moae_ok and pre_ok is not True else None)
    data = ("generated faces (procedural renderer, not real expressions): the numbers test the mechanism, not "
            "accuracy on DFEW/AffectNet" if results.get("generated") else f"the data set at {cfg.get('data_dir')}")
    seeds = cfg.get("seeds", 1)
    return Verdict(held, f"On {data}, {seeds} seed(s): " + "; ".join(parts) + ".", table(s))


def plot_results(results: dict, bars_path: Path, experts_path: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = results["summary"]
    keys = list(s)
    fig, ax = plt.subplots(1, 2, figsize=(12, 4))
    x = np.arange(len(keys))
    for off, metric, label in ((-0.2, "dynamic_uar", "dynamic UAR"), (0.2, "dynamic_war", "dynamic WAR")):
        ax[0].bar(x + off, [100 * s[k].get(metric, np.nan) for k in keys], 0.4, label=label)
    ax[0].set_xticks(x, [k.replace(" | ", "\n") for k in keys], fontsize=7)
    ax[0].set_ylabel("%")
    ax[0].legend()
    ax[0].set_title("dynamic expression recognition (test)")
    ax[1].bar(x, [100 * s[k].get("static_war", np.nan) for k in keys], 0.5, color="tab:green")
    ax[1].set_xticks(x, [k.replace(" | ", "\n") for k in keys], fontsize=7)
    ax[1].set_title("static accuracy (test)")
    fig.tight_layout()
    fig.savefig(bars_path, dpi=90)
    plt.close(fig)
    paths = [bars_path]
    shares = expert_shares(results["runs"])
    if shares:
        fig, axes = plt.subplots(1, len(shares), figsize=(4 * len(shares), 3))
        for a, (task, m) in zip(np.atleast_1d(axes), shares.items()):
            im = a.imshow(m, vmin=0, vmax=1, cmap="viridis")
            a.set_title(f"{task} tokens")
            a.set_xlabel("expert")
            a.set_ylabel("MoAE layer")
        fig.colorbar(im, ax=axes)
        fig.savefig(experts_path, dpi=90)
        plt.close(fig)
        paths.append(experts_path)
    return paths
