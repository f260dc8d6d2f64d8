"""S4D: does static expression data help dynamic expression recognition, through dual-modal MAE
pretraining and through multi-task fine-tuning with a Mixture of Adapter Experts?

Stages: (1) two MAE pretrainings, on clips plus static images (two-frame clips) and on clips
alone; (2) fine-tunings from them: single-task dynamic, single-task static, vanilla multi-task,
multi-task with MoAE; (3) UAR/WAR on the dynamic test set, static accuracy, expert shares."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jobs.base import Job, JobContext, Verdict, register


@dataclass
class S4DConfig:
    data_dir: str | None = None
    """A real data set laid out as jobs.faces.datasets.S4D_LAYOUT; None: generated faces."""
    # the encoder and MAE (ViT-B VideoMAE of the paper)
    image_size: int = 224
    patch: int = 16
    frames: int = 16
    tubelet: int = 2
    dim: int = 768
    depth: int = 12
    heads: int = 12
    decoder_dim: int = 384
    decoder_depth: int = 4
    mask_ratio: float = 0.9
    """Tube masking ratio of pretraining (VideoMAE's 90%)."""
    pretrain_steps: int = 20000
    pretrain_batch: int = 64
    pretrain_lr: float = 1.5e-4
    # fine-tuning (the official run_class_finetuning.py defaults)
    epochs: int = 30
    batch: int = 64
    lr: float = 1e-3
    layer_decay: float = 0.75
    warmup_epochs: int = 5
    static_weight: float = 1.0
    """Weight of the static task's loss in multi-task fine-tuning."""
    moe_layers: int = 6
    """MoAE in the last this many blocks."""
    num_experts: int = 4
    top_k: int = 1
    adapter_dim: int = 64
    adapter_scale: float = 0.5
    noisy_router: bool = True
    aux_loss_coeff: float = 1e-3
    seeds: int = 1
    pretrain_ablation: bool = True
    """Also pretrain on clips alone and fine-tune from it (pretraining with vs without static data)."""
    # generated data (ignored with data_dir)
    n_pretrain_clips: int = 2000
    n_pretrain_static: int = 4000
    n_dyn_train: int = 600
    n_dyn_val: int = 300
    n_dyn_test: int = 700
    n_static_train: int = 3000
    n_static_val: int = 500
    n_static_test: int = 1000
    static_label_noise: float = 0.1
    """Share of static training labels drawn at random (crowd labels of in-the-wild photos)."""


def _data(cfg: S4DConfig, ctx: JobContext) -> tuple[Path, bool]:
    """Write the run's arrays to run_dir/data.npz once; returns (path, generated)."""
    path = ctx.run_dir / "data.npz"
    from jobs.faces import datasets as ds

    if cfg.data_dir:
        parts = {}
        for kind, key in (("static", "st"), ("dynamic", "dyn")):
            train = ds.load_expression_dir(cfg.data_dir, kind, "train", cfg.image_size, cfg.frames)
            test = ds.load_expression_dir(cfg.data_dir, kind, "test", cfg.image_size, cfg.frames)
            order = np.random.default_rng(ctx.seed).permutation(len(train.y))
            cut = max(1, len(order) // 7)  # a held-out validation share of the training split
            parts |= {f"{key}_val_x": train.x[order[:cut]], f"{key}_val_y": train.y[order[:cut]],
                      f"{key}_train_x": train.x[order[cut:]], f"{key}_train_y": train.y[order[cut:]],
                      f"{key}_test_x": test.x, f"{key}_test_y": test.y}
        parts |= {"pretrain_clips": parts["dyn_train_x"], "pretrain_static": parts["st_train_x"]}
        generated = False
    else:
        base = ctx.seed * 1000  # each split its own generator seed
        ctx.log("generating faces: pretraining clips and images, labelled clips and images")
        parts = {"pretrain_clips": ds.generate_clips(cfg.n_pretrain_clips, base + 1, cfg.frames, cfg.image_size).x,
                 "pretrain_static": ds.generate_static(cfg.n_pretrain_static, base + 2, cfg.image_size).x}
        for key, n, k in (("train", cfg.n_dyn_train, 3), ("val", cfg.n_dyn_val, 4), ("test", cfg.n_dyn_test, 5)):
            d = ds.generate_clips(n, base + k, cfg.frames, cfg.image_size)
            parts |= {f"dyn_{key}_x": d.x, f"dyn_{key}_y": d.y}
        for key, n, k in (("train", cfg.n_static_train, 6), ("val", cfg.n_static_val, 7), ("test", cfg.n_static_test, 8)):
            noise = cfg.static_label_noise if key == "train" else 0.0  # evaluation labels stay clean
            st = ds.generate_static(n, base + k, cfg.image_size, label_noise=noise)
            parts |= {f"st_{key}_x": st.x, f"st_{key}_y": st.y}
        generated = True
    np.savez(path, classes=len(ds.EMOTIONS), **parts)
    return path, generated


@register
class S4DJob(Job):
    name = "s4d"
    title = ("Static for Dynamic: Towards a Deeper Understanding of Dynamic Facial Expressions Using Static "
             "Expression Data (Chen et al., 2024)")
    claim = ("Static expression images help dynamic expression recognition: pretraining the MAE on images and clips "
             "beats clips alone, and multi-task fine-tuning with a Mixture of Adapter Experts raises the dynamic "
             "task's UAR/WAR over single-task fine-tuning, avoiding the negative transfer of vanilla multi-task.")
    Config = S4DConfig
    presets = {
        "tiny": {"image_size": 32, "patch": 8, "frames": 4, "dim": 32, "depth": 2, "heads": 2, "decoder_dim": 32,
                 "decoder_depth": 1, "pretrain_steps": 30, "pretrain_batch": 16, "pretrain_lr": 1e-3, "epochs": 3,
                 "batch": 16, "warmup_epochs": 1, "moe_layers": 1, "num_experts": 3, "adapter_dim": 8,
                 "n_pretrain_clips": 64, "n_pretrain_static": 64, "n_dyn_train": 64, "n_dyn_val": 32, "n_dyn_test": 48,
                 "n_static_train": 96, "n_static_val": 32, "n_static_test": 48},
        # sized for a shared 2-core CPU (~25 minutes under load): a 4-block ViT on 32x32 faces, 8-frame clips
        "full": {"image_size": 32, "patch": 8, "frames": 8, "dim": 96, "depth": 4, "heads": 4, "decoder_dim": 64,
                 "decoder_depth": 1, "pretrain_steps": 600, "pretrain_batch": 32, "pretrain_lr": 1e-3, "epochs": 25,
                 "batch": 32, "warmup_epochs": 1, "moe_layers": 2, "num_experts": 4, "adapter_dim": 32,
                 "n_pretrain_clips": 1200, "n_pretrain_static": 2400},
    }

    def run(self, cfg: S4DConfig, ctx: JobContext) -> dict:
        from jobs.s4d.train import finetune_cell, pretrain_cell

        data, generated = _data(cfg, ctx)
        model = {k: getattr(cfg, k) for k in ("image_size", "patch", "frames", "tubelet", "dim", "depth", "heads")}
        common = {"data": str(data), "model": model}
        pre = [{"name": name, "use_static": use_static, "steps": cfg.pretrain_steps, "batch": cfg.pretrain_batch,
                "lr": cfg.pretrain_lr, "mask_ratio": cfg.mask_ratio, "decoder_dim": cfg.decoder_dim,
                "decoder_depth": cfg.decoder_depth, "seed": ctx.seed, "out": str(ctx.run_dir / f"encoder-{name}.pt"),
                **common} for name, use_static in (("clips+static", True), ("clips", False))
               if use_static or cfg.pretrain_ablation]
        ctx.log(f"MAE pretraining: {', '.join(p['name'] for p in pre)} ({cfg.pretrain_steps} steps each)")
        pretrain = dict(zip([p["name"] for p in pre], ctx.map(pretrain_cell, pre, desc="s4d pretrain")))
        ft_common = {k: getattr(cfg, k) for k in ("epochs", "batch", "lr", "layer_decay", "warmup_epochs",
                                                   "static_weight", "moe_layers", "num_experts", "top_k",
                                                   "adapter_dim", "adapter_scale", "aux_loss_coeff")}
        ft_common |= {"noisy": cfg.noisy_router, **common}
        plan = [("clips+static", v) for v in ("single-dynamic", "single-static", "vanilla-mt", "moae-mt")]
        if cfg.pretrain_ablation:
            plan += [("clips", "single-dynamic"), ("clips", "moae-mt")]
        cells = [{"pretraining": p, "variant": v, "seed": ctx.seed + s, "pretrained": str(ctx.run_dir / f"encoder-{p}.pt"),
                  **ft_common} for s in range(cfg.seeds) for p, v in plan]
        ctx.log(f"fine-tuning: {len(cells)} runs ({cfg.epochs} epochs each)")
        runs = [{"pretraining": c["pretraining"], "seed": c["seed"]} | r
                for c, r in zip(cells, ctx.map(finetune_cell, cells, desc="s4d fine-tune"))]
        for r in runs:
            for task in ("dynamic", "static"):
                for m, v in r.get(task, {}).items():
                    if m != "expert_share":
                        ctx.metric(f"{task}_{m}", v, variant=r["variant"], pretraining=r["pretraining"])
        return {"generated": generated, "pretrain": pretrain, "runs": runs, "summary": summarize(runs)}

    def plots(self, cfg: S4DConfig, results: dict, ctx: JobContext) -> list[Path]:
        from jobs.s4d.report import plot_results

        paths = plot_results(results, ctx.plot_path("s4d_results"), ctx.plot_path("s4d_experts"))
        if results.get("generated"):
            from jobs.faces.grid import face_grid

            paths.append(face_grid(ctx.plot_path("s4d_faces"), ctx.seed))
        return paths

    def verdict(self, cfg: S4DConfig, results: dict) -> Verdict:
        from jobs.s4d.report import verdict

        return verdict(results, asdict(cfg))


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean over seeds per (pretraining, variant): dynamic UAR/WAR, static accuracy."""
    out: dict[str, dict[str, float]] = {}
    for key in sorted({(r["pretraining"], r["variant"]) for r in runs}):
        rows = [r for r in runs if (r["pretraining"], r["variant"]) == key]
        entry: dict[str, float] = {"seeds": len(rows)}
        for task, metric in (("dynamic", "uar"), ("dynamic", "war"), ("static", "war")):
            vals = [r[task][metric] for r in rows if task in r]
            if vals:
                entry[f"{task}_{metric}"] = float(np.mean(vals))
                entry[f"{task}_{metric}_sd"] = float(np.std(vals))
        out[f"{key[0]} | {key[1]}"] = entry
    return out
