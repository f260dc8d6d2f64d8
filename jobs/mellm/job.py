"""MELLM: does the motion-enhanced colour map (onset-apex optical flow as colours, fused with the
onset frame) let a model read micro-expressions better than the apex frame or the flow alone?

Subject-independent folds (no person in both train and test, as the composite benchmark's
leave-one-subject-out); per fold and input kind a small CNN learns the emotion and the action
units; the pooled test predictions give UF1 / UAR for the emotion and per-AU F1 of the FACS-style
descriptions written from the predicted units."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jobs.base import Job, JobContext, Verdict, register


@dataclass
class MELLMConfig:
    data_dir: str | None = None
    """A real micro-expression set laid out as jobs.faces.datasets.MICRO_LAYOUT; None: generated faces."""
    inputs: list[str] | None = None
    """Input kinds to compare (apex, flow, fused); None: all three."""
    image_size: int = 64
    fusion_alpha: float = 0.5
    folds: int = 5
    """Subject-independent folds (each subject's samples in one fold)."""
    epochs: int = 20
    batch: int = 32
    lr: float = 1e-3
    width: int = 16
    seeds: int = 1
    describer_llm: bool = True
    """Also describe test samples with the shared text backend from flow cues (llm_describer.py)."""
    llm: str | None = None
    """Text backend spec (local, openai:<url>#<model>); None: the jobs.llm setting."""
    llm_samples: int = 60
    llm_shots: int = 3
    llm_max_tokens: int = 96
    # generated data (ignored with data_dir)
    n_samples: int = 600
    subjects: int = 20
    frames: int = 9
    intensity_low: float = 0.12
    intensity_high: float = 0.3


def train_cell(cell: dict[str, Any]) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from jobs.mellm.model import MicroExpressionNet

    torch.manual_seed(cell["seed"])
    rng = np.random.default_rng(cell["seed"])
    data = np.load(cell["data"])
    x, y, aus, fold = (torch.from_numpy(data[f"x_{cell['input']}"]), data["y"], data["aus"] > 0, data["fold"])
    train, test = np.flatnonzero(fold != cell["fold"]), np.flatnonzero(fold == cell["fold"])
    model = MicroExpressionNet(int(data["classes"]), aus.shape[1], cell["width"])
    opt = torch.optim.AdamW(model.parameters(), lr=cell["lr"], weight_decay=1e-4)
    yt, at = torch.from_numpy(y).long(), torch.from_numpy(aus).float()
    counts = np.bincount(y[train], minlength=int(data["classes"])).clip(1)
    weight = torch.tensor(len(train) / (len(counts) * counts), dtype=torch.float32)  # class-balanced (imbalanced sets)
    for _ in range(cell["epochs"]):
        model.train()
        order = rng.permutation(train)
        for i in range(0, len(order), cell["batch"]):
            idx = order[i:i + cell["batch"]]
            if len(idx) < 2:
                continue
            logits, au_logits = model(x[idx])
            loss = F.cross_entropy(logits, yt[idx], weight=weight) + F.binary_cross_entropy_with_logits(au_logits, at[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        logits, au_logits = model(x[test])
    return {"index": test.tolist(), "pred": logits.argmax(-1).tolist(), "au_prob": torch.sigmoid(au_logits).tolist()}


def _data(cfg: MELLMConfig, ctx: JobContext, kinds: list[str]) -> tuple[Path, bool, list[str]]:
    from jobs.faces import datasets as ds
    from jobs.mellm.motion import FlowParams, model_inputs

    if cfg.data_dir:
        onset, apex, labelled = ds.load_micro_dir(cfg.data_dir, cfg.image_size)
    else:
        labelled, apex_at = ds.generate_micro(cfg.n_samples, ctx.seed * 1000 + 1, cfg.subjects, cfg.frames,
                                              cfg.image_size, (cfg.intensity_low, cfg.intensity_high))
        onset, apex = labelled.x[:, 0], labelled.x[np.arange(len(apex_at)), apex_at]
    subjects = np.unique(labelled.groups)
    if len(subjects) < cfg.folds:
        raise ValueError(f"{len(subjects)} subject(s) cannot fill {cfg.folds} subject-independent folds; lower folds")
    perm = np.random.default_rng(ctx.seed).permutation(subjects)
    fold_of = {s: i % cfg.folds for i, s in enumerate(perm)}
    params = FlowParams(fusion_alpha=cfg.fusion_alpha)
    ctx.log(f"{len(labelled.y)} samples, {len(subjects)} subjects; optical flow and colour maps")
    arrays = {f"x_{k}": model_inputs(onset, apex, k, params) for k in kinds}
    if cfg.describer_llm:
        from jobs.mellm.motion import optical_flow

        arrays["flow"] = np.stack([optical_flow(o, a, params) for o, a in zip(onset, apex)])
    path = ctx.run_dir / "data.npz"
    np.savez(path, y=labelled.y, aus=labelled.aus, fold=np.array([fold_of[g] for g in labelled.groups]),
             classes=len(labelled.classes), **arrays)
    np.savez_compressed(ctx.run_dir / "examples.npz", onset=onset[:6],
                        **{k: v[:6] for k, v in arrays.items()})
    return path, not cfg.data_dir, list(labelled.classes)


@register
class MELLMJob(Job):
    name = "mellm"
    title = "MELLM: Exploring LLM-Powered Micro-Expression Understanding Enhanced by Subtle Motion Perception (2025)"
    claim = ("The motion-enhanced colour map -- onset-to-apex optical flow as hue and brightness, fused with the onset "
             "frame -- makes micro-expressions easier to recognise than the apex frame alone or the flow alone "
             "(higher UF1 / UAR), and supports FACS-style action-unit descriptions.")
    Config = MELLMConfig
    presets = {
        "tiny": {"epochs": 3, "folds": 2, "n_samples": 48, "subjects": 4, "width": 8, "batch": 16, "image_size": 48,
                 "llm_samples": 2, "llm_shots": 2, "llm_max_tokens": 32},
        # sized for a shared 2-core CPU: 400 samples of 16 subjects, 4 subject-independent folds
        "full": {"n_samples": 400, "subjects": 16, "folds": 4, "epochs": 15, "llm_samples": 40},
    }

    def run(self, cfg: MELLMConfig, ctx: JobContext) -> dict:
        from jobs.mellm.motion import INPUTS

        kinds = list(cfg.inputs or INPUTS)
        bad = sorted(set(kinds) - set(INPUTS))
        if bad:
            raise ValueError(f"unknown input(s) {bad}: choose from {list(INPUTS)}")
        data, generated, classes = _data(cfg, ctx, kinds)
        cells = [{"data": str(data), "input": k, "fold": f, "seed": ctx.seed + s, "epochs": cfg.epochs,
                  "batch": cfg.batch, "lr": cfg.lr, "width": cfg.width}
                 for s in range(cfg.seeds) for k in kinds for f in range(cfg.folds)]
        ctx.log(f"{len(cells)} trainings ({len(kinds)} inputs x {cfg.folds} folds x {cfg.seeds} seed(s))")
        outs = ctx.map(train_cell, cells, desc="mellm folds")
        arrays = np.load(data)
        from jobs.mellm.analysis import score

        results: dict[str, Any] = {"generated": generated, "classes": classes, "scores": {}}
        for k in kinds:
            per_seed = [score([o for c, o in zip(cells, outs) if c["input"] == k and c["seed"] == ctx.seed + s],
                              arrays["y"], arrays["aus"] > 0, classes) for s in range(cfg.seeds)]
            results["scores"][k] = per_seed
            for name in ("uf1", "uar"):
                ctx.metric(name, float(np.mean([p[name] for p in per_seed])), input=k)
        if cfg.describer_llm:
            from jobs.mellm.analysis import score_texts
            from jobs.mellm.llm_describer import llm_describe

            ctx.log(f"describing {cfg.llm_samples} test samples with the text backend")
            described = llm_describe(arrays["flow"], arrays["y"], arrays["aus"], arrays["fold"], classes,
                                     cfg.llm_samples, cfg.llm_shots, cfg.llm_max_tokens, ctx.seed,
                                     lambda it: ctx.progress(it, desc="llm descriptions"), cfg.llm)
            results["llm"] = described | score_texts(described, arrays["y"], arrays["aus"] > 0, classes)
        return results

    def plots(self, cfg: MELLMConfig, results: dict, ctx: JobContext) -> list[Path]:
        from jobs.mellm.analysis import plot_examples, plot_scores

        paths = [plot_scores(results, ctx.plot_path("mellm_scores"))]
        examples = ctx.run_dir / "examples.npz"
        if examples.exists():
            paths.append(plot_examples(examples, ctx.plot_path("mellm_inputs")))
        return paths

    def verdict(self, cfg: MELLMConfig, results: dict) -> Verdict:
        from jobs.mellm.analysis import verdict

        return verdict(results, cfg.data_dir)
