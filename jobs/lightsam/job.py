"""LightSAM: is sharpness-aware minimization with adaptive radius and step size insensitive to
its ρ and η? A ρ x η grid, several seeds, on digits (an MLP) and on CTR (DCN-V2 and DLF on
MovieLens-100K, through the project's trainer), against SAM, SGD and Adam."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.base import Job, JobContext, Verdict, register
from jobs.lightsam import analysis

SHARPNESS_AWARE = ("sam", "lightsam-adagradnorm", "lightsam-adagrad", "lightsam-adam")


@dataclass
class LightSAMConfig:
    tasks: list[str] = field(default_factory=lambda: ["digits", "ctr"])
    optimizers: list[str] = field(default_factory=lambda: [
        "sgd", "adam", "sam", "lightsam-adagradnorm", "lightsam-adagrad", "lightsam-adam"])
    rhos: list[float] = field(default_factory=lambda: [0.001, 0.01, 0.1, 1.0, 10.0])
    """Perturbation radii of the grid (SGD and Adam have none)."""
    etas: list[float] = field(default_factory=lambda: [0.001, 0.01, 0.1, 1.0, 10.0])
    """Learning rates of the grid."""
    seeds: int = 3
    within: float = 0.01
    """A cell counts as good when its score is within this share of the task's best cell."""
    digits_epochs: int = 10
    digits_batch_size: int = 64
    digits_hidden: int = 64
    ctr_models: list[str] = field(default_factory=lambda: ["dcnv2", "dlf"])
    ctr_optimizers: list[str] | None = field(default_factory=lambda: ["adam", "sam", "lightsam-adagradnorm"])
    """Optimizers of the CTR grid (a CTR run costs ~100 digits runs); None: all of ``optimizers``."""
    ctr_seeds: int | None = None
    """Seeds of the CTR grid; None: ``seeds``."""
    ctr_rhos: list[float] | None = None
    """ρ values of the CTR grid; None: ``rhos``."""
    ctr_etas: list[float] | None = None
    """η values of the CTR grid; None: ``etas``."""
    ctr_data: str = "movielens"
    """movielens (settings' features dir, built if missing) or generated (a small MovieLens-shaped sample)."""
    ctr_generated_rows: int = 3000
    ctr_epochs: int = 1
    ctr_steps_per_epoch: int | None = 20
    """Subsample of the CTR training split per cell (steps x batch rows); None: all of it."""
    ctr_batch_size: int = 1024


def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    from jobs.lightsam.tasks import ctr_cell, digits_cell

    return ctr_cell(cell) if cell["task"].startswith("ctr:") else digits_cell(cell)


def _ctr_features(cfg: LightSAMConfig, ctx: JobContext) -> Path:
    from features.pipeline import build_features
    from recast.settings import get_settings

    settings = get_settings()
    if cfg.ctr_data == "movielens":
        ctx.log("CTR data: MovieLens-100K features (built once if missing)")
        return build_features(settings).features_dir
    if cfg.ctr_data != "generated":
        raise ValueError(f"ctr_data must be movielens or generated, got {cfg.ctr_data!r}")
    from features.movielens import generate_movielens_sample

    home = ctx.run_dir / "ctr_data"
    raw = generate_movielens_sample(home / "raw", n_users=80, n_items=60, n_interactions=cfg.ctr_generated_rows, seed=0)
    return build_features(settings.model_copy(update={"home": home}), raw_dir=raw).features_dir


@register
class LightSAMJob(Job):
    name = "lightsam"
    title = "LightSAM: Parameter-Agnostic Sharpness-Aware Minimization (Cheng et al., 2025)"
    claim = ("LightSAM sets SAM's perturbation radius ρ and learning rate η adaptively (AdaGrad-Norm, AdaGrad or Adam), "
             "so it converges, and gives good results, whatever ρ and η: far more of a ρ x η grid is near the best "
             "than with SAM.")
    Config = LightSAMConfig
    presets = {
        "tiny": {"tasks": ["digits", "ctr"], "optimizers": ["sgd", "sam", "lightsam-adagradnorm", "lightsam-adagrad"],
                 "rhos": [0.01, 0.1, 1.0], "etas": [0.03, 0.3, 3.0], "seeds": 1, "digits_epochs": 4,
                 "ctr_models": ["dcnv2"], "ctr_optimizers": ["sam", "lightsam-adagradnorm"],
                 "ctr_rhos": [0.1], "ctr_etas": [0.01], "ctr_data": "generated", "ctr_generated_rows": 1500, "ctr_steps_per_epoch": 4,
                 "ctr_batch_size": 256},
        # bounded for a shared 2-core machine: CTR cells train 20 steps of 1,024 rows (~25% of an epoch)
        "full": {"ctr_seeds": 2},
    }

    def cells(self, cfg: LightSAMConfig, ctx: JobContext) -> list[dict[str, Any]]:
        tasks: list[tuple[str, dict]] = []
        ctr_optimizers = cfg.optimizers if cfg.ctr_optimizers is None else cfg.ctr_optimizers
        for task in cfg.tasks:
            if task == "digits":
                tasks.append(("digits", {"epochs": cfg.digits_epochs, "batch_size": cfg.digits_batch_size,
                                         "hidden": cfg.digits_hidden}))
            elif task == "ctr":
                features = str(_ctr_features(cfg, ctx))
                for model in cfg.ctr_models:
                    tasks.append((f"ctr:{model}", {"model": model, "features_dir": features, "epochs": cfg.ctr_epochs,
                                                   "steps_per_epoch": cfg.ctr_steps_per_epoch,
                                                   "batch_size": cfg.ctr_batch_size}))
            else:
                raise ValueError(f"unknown task {task!r}: digits or ctr")
        cells = []
        for task, extra in tasks:
            ctr = task.startswith("ctr:")
            rhos = cfg.ctr_rhos if ctr and cfg.ctr_rhos is not None else cfg.rhos
            etas = cfg.ctr_etas if ctr and cfg.ctr_etas is not None else cfg.etas
            for opt in (ctr_optimizers if ctr else cfg.optimizers):
                for rho in (rhos if opt in SHARPNESS_AWARE else [None]):
                    for eta in etas:
                        for s in range(cfg.ctr_seeds if ctr and cfg.ctr_seeds is not None else cfg.seeds):
                            cells.append({"task": task, "optimizer": opt, "rho": rho, "eta": eta,
                                          "seed": ctx.seed + s, **extra})
        return cells

    def run(self, cfg: LightSAMConfig, ctx: JobContext) -> dict:
        unknown = sorted((set(cfg.optimizers) | set(cfg.ctr_optimizers or [])) - set(SHARPNESS_AWARE) - {"sgd", "adam"})
        if unknown:
            raise ValueError(f"unknown optimizer(s) {unknown}")
        cells = self.cells(cfg, ctx)
        ctx.log(f"{len(cells)} training runs ({len(cfg.optimizers)} optimizers, {len(cfg.rhos)} x {len(cfg.etas)} grid,"
                f" {cfg.seeds} seed(s))")
        scores = ctx.map(run_cell, cells, desc="lightsam grid")
        keep = ("task", "optimizer", "rho", "eta", "seed")
        records = [{k: c[k] for k in keep} | r for c, r in zip(cells, scores)]
        summary = analysis.summarize(analysis.grid_cells(records), cfg.within)
        for task, by_opt in summary.items():
            for opt, s in by_opt.items():
                ctx.metric("share_within_best", s["share_within_task_best"], task=task, optimizer=opt)
                ctx.metric("best_val", s["best_val"], task=task, optimizer=opt)
        return {"records": records, "summary": summary, "comparison": analysis.lightsam_vs_sam(summary)}

    def plots(self, cfg: LightSAMConfig, results: dict, ctx: JobContext) -> list[Path]:
        from jobs.lightsam.tasks import CHANCE

        cells = analysis.grid_cells(results["records"])
        paths = []
        for task in cells:
            path = ctx.plot_path(f"heatmap_{task.replace(':', '_')}")
            analysis.heatmaps(cells, task, path, cfg.within, chance=CHANCE["ctr" if task.startswith("ctr") else "digits"])
            paths.append(path)
        return paths

    def verdict(self, cfg: LightSAMConfig, results: dict) -> Verdict:
        # from the raw records, so `recast jobs report` shows the current statistics
        summary = analysis.summarize(analysis.grid_cells(results["records"]), cfg.within)
        comparison = analysis.lightsam_vs_sam(summary)
        table = analysis.markdown_table(summary)
        if not comparison:
            return Verdict(None, "SAM was not in the grid: nothing to compare LightSAM with.", table)
        parts, wins = [], []
        for task, c in comparison.items():
            forms = ", ".join(f"{opt} {share:.0%}" for opt, share in c["lightsam"].items())
            parts.append(f"{task}: SAM {c['sam']:.0%} vs {forms}")
            wins.extend(c["higher"].values())
        held = True if wins and all(wins) else (False if not any(wins) else None)
        how = {True: "every LightSAM form had a larger share than SAM on every task",
               False: "no LightSAM form had a larger share than SAM on any task",
               None: "some LightSAM forms beat SAM on some tasks, not all"}[held]
        summary = (f"Share of the ρ x η grid within {cfg.within:.0%} of the task's best validation score "
                   f"(mean over {cfg.seeds} seed(s)): " + "; ".join(parts) + f". So {how}. The test score of each "
                   "optimizer's best cell (chosen on validation) is in the table.")
        return Verdict(held, summary, table)
