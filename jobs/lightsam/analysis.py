"""Grid statistics of the LightSAM job: small pure functions over the cells' scores.

A *cell* is one (optimizer, ρ, η); its score is the mean over seeds of the validation score
(accuracy on digits, AUC on CTR). Per task and optimizer we report the best cell (chosen on
validation; its test score alongside), the share of cells within ``within`` (relative, 1%) of
the task's best cell over all optimizers -- the robustness the paper claims -- the share within
1% of the optimizer's own best, the spread (standard deviation and range) of cell scores, and the
share of cells where a seed diverged. Optimizers without a radius (SGD, Adam) have one cell per η.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

LIGHTSAM = ("lightsam-adagradnorm", "lightsam-adagrad", "lightsam-adam")
ORDER = ("sgd", "adam", "sam", *LIGHTSAM)


def _ordered(by_opt: dict) -> list:
    return sorted(by_opt.items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else len(ORDER))


def grid_cells(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[tuple, dict[str, float]]]]:
    """task -> optimizer -> (rho, eta) -> {val, test, val_seed_std, diverged, seeds}."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["task"], r["optimizer"], r["rho"], r["eta"])].append(r)
    out: dict = defaultdict(lambda: defaultdict(dict))
    for (task, opt, rho, eta), rows in groups.items():
        vals = [r["val"] for r in rows]
        mean = sum(vals) / len(vals)
        out[task][opt][(rho, eta)] = {
            "val": mean,
            "test": sum(r["test"] for r in rows) / len(rows),
            "val_seed_std": math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals)),
            "diverged": sum(bool(r["diverged"]) for r in rows) / len(rows),
            "seeds": len(rows),
        }
    return out


def _std(xs: list[float]) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def summarize(cells: dict[str, dict[str, dict[tuple, dict[str, float]]]], within: float = 0.01,
              loose: float = 0.05) -> dict[str, dict[str, dict]]:
    """task -> optimizer -> the statistics above (and the share within ``loose`` of the task's best)."""
    out: dict[str, dict[str, dict]] = {}
    for task, by_opt in cells.items():
        task_best = max(c["val"] for grid in by_opt.values() for c in grid.values())
        out[task] = {}
        for opt, grid in _ordered(by_opt):
            vals = [c["val"] for c in grid.values()]
            best_key = max(grid, key=lambda k: grid[k]["val"])
            own_best = grid[best_key]["val"]
            out[task][opt] = {
                "cells": len(grid),
                "best_val": own_best,
                "best_rho": best_key[0],
                "best_eta": best_key[1],
                "test_at_best": grid[best_key]["test"],
                "share_within_task_best": sum(v >= task_best * (1 - within) for v in vals) / len(vals),
                "share_within_own_best": sum(v >= own_best * (1 - within) for v in vals) / len(vals),
                "share_within_task_best_loose": sum(v >= task_best * (1 - loose) for v in vals) / len(vals),
                "spread_std": _std(vals),
                "spread_range": max(vals) - min(vals),
                "diverged_share": sum(c["diverged"] > 0 for c in grid.values()) / len(grid),
            }
    return out


def lightsam_vs_sam(summary: dict[str, dict[str, dict]]) -> dict[str, dict[str, Any]]:
    """Per task: SAM's share within 1% of the task's best and each LightSAM form's, and whether it is higher."""
    out = {}
    for task, by_opt in summary.items():
        if "sam" not in by_opt:
            continue
        sam = by_opt["sam"]["share_within_task_best"]
        forms = {opt: by_opt[opt]["share_within_task_best"] for opt in LIGHTSAM if opt in by_opt}
        out[task] = {"sam": sam, "lightsam": forms, "higher": {opt: share > sam for opt, share in forms.items()}}
    return out


def markdown_table(summary: dict[str, dict[str, dict]]) -> str:
    lines = ["| task | optimizer | cells | best val | (ρ, η) of best | test at best | within 1% of task best |"
             " within 5% of task best | within 1% of own best | spread: std / range | diverged cells |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for task, by_opt in summary.items():
        for opt, s in by_opt.items():
            rho = "-" if s["best_rho"] is None else f"{s['best_rho']:g}"
            lines.append(f"| {task} | {opt} | {s['cells']} | {s['best_val']:.4f} | ({rho}, {s['best_eta']:g}) |"
                         f" {s['test_at_best']:.4f} | {s['share_within_task_best']:.0%} | {s['share_within_task_best_loose']:.0%} |"
                         f" {s['share_within_own_best']:.0%} |"
                         f" {s['spread_std']:.4f} / {s['spread_range']:.4f} | {s['diverged_share']:.0%} |")
    return "\n".join(lines)


def heatmaps(cells: dict[str, dict[str, dict[tuple, dict[str, float]]]], task: str, path: Any, within: float = 0.01,
             chance: float = 0.0) -> None:
    """One panel per optimizer: mean validation score over ρ (rows) x η (columns); a dot marks
    cells within ``within`` of the task's best."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    by_opt = cells[task]
    best = max(c["val"] for grid in by_opt.values() for c in grid.values())
    etas = sorted({k[1] for grid in by_opt.values() for k in grid})
    fig, axes = plt.subplots(1, len(by_opt), figsize=(3.6 * len(by_opt), 3.4), squeeze=False)
    fig.subplots_adjust(wspace=0.35)
    image = None
    for ax, (opt, grid) in zip(axes[0], _ordered(by_opt)):
        rhos = sorted({k[0] for k in grid}, key=lambda r: -1 if r is None else r)
        z = np.full((len(rhos), len(etas)), np.nan)
        for (rho, eta), c in grid.items():
            z[rhos.index(rho), etas.index(eta)] = c["val"]
        image = ax.imshow(z, vmin=chance, vmax=best, cmap="viridis", origin="lower", aspect="auto")
        for i in range(len(rhos)):
            for j in range(len(etas)):
                if not np.isnan(z[i, j]):
                    good = z[i, j] >= best * (1 - within)
                    ax.text(j, i, f"{z[i, j]:.2f}" + ("*" if good else ""), ha="center", va="center", fontsize=7,
                            color="black" if z[i, j] > (chance + best) / 2 else "white")
        ax.set_xticks(range(len(etas)), [f"{e:g}" for e in etas], fontsize=7)
        ax.set_yticks(range(len(rhos)), ["-" if r is None else f"{r:g}" for r in rhos], fontsize=7)
        ax.set_xlabel("η (learning rate)")
        ax.set_title(opt, fontsize=9)
    axes[0][0].set_ylabel("ρ (radius)")
    fig.suptitle(f"{task}: mean validation score over seeds (* within {within:.0%} of the best)", fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
