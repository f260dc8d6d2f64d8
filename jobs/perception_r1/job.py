"""Perception-R1 (a visual-perception reward in RLVR), on a small generated substitute.

SUBSTITUTE, said plainly: the paper trains Qwen2-VL-7B with GRPO on multimodal math problems
whose visual annotations were extracted from a strong model's correct solutions, judged by an
LLM. No vision-language model is reachable here, so this job trains a small CNN+GRU policy
(jobs/perception_r1/policy.py) on generated figures with structured annotations
(jobs/perception_r1/task.py), judged by rule. What carries over is the mechanism under test:
GRPO with accuracy + format rewards vs the same plus the visual-perception reward, from one
warm-started policy, and the paper's analysis -- McNemar's test on per-item perception
correctness before vs after RLVR, for both rewards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.base import Job, JobContext, Verdict, register

REWARD_LABELS = {"accuracy_format": "accuracy + format", "accuracy_format_perception": "accuracy + format + perception"}


@dataclass
class PerceptionR1Config:
    seeds: int = 3
    device: str = "auto"
    """auto (cuda when available), cpu, cuda, cuda:1, ..."""
    caption_items: int = 300
    """Figures with reference captions for the supervised warm start."""
    warm_start_steps: int = 100
    warm_start_lr: float = 3e-3
    train_items: int = 2000
    test_items: int = 1000
    hidden: int = 96
    batch_size: int = 32
    steps: int = 300
    """GRPO steps."""
    prompts_per_step: int = 16
    group_size: int = 8
    lr: float = 1e-3
    clip_eps: float = 0.2
    kl_beta: float = 0.04
    loss_type: str = "sequence"
    inner_epochs: int = 1
    """Policy updates per sampled batch (μ; 1 as in DeepSeekMath's and the paper's GRPO)."""
    perception_weight: float = 1.0
    """γ: weight of the visual-perception reward in the sum."""
    alpha: float = 0.05
    """Significance level of the McNemar tests."""


def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    from jobs.perception_r1.train import run_variant

    return run_variant(cell)


@register
class PerceptionR1Job(Job):
    name = "perception-r1"
    title = ("Advancing Multimodal Reasoning Capabilities of MLLMs via Visual Perception Reward "
             "(Perception-R1, Xiao et al., 2025) -- on a small generated substitute task")
    claim = ("RLVR with accuracy and format rewards alone does not make a multimodal model perceive better "
             "(McNemar: no significant gain in perception correctness); adding a visual-perception reward, which "
             "scores the response against the problem's visual annotations, does, and answers improve with it.")
    Config = PerceptionR1Config
    presets = {
        "tiny": {"seeds": 1, "caption_items": 200, "warm_start_steps": 120, "train_items": 500, "test_items": 300,
                 "steps": 100, "lr": 2e-3, "hidden": 64, "device": "cpu"},
        "full": {},
    }

    def run(self, cfg: PerceptionR1Config, ctx: JobContext) -> dict:
        from jobs.perception_r1.train import REWARDS

        fields = {k: v for k, v in vars(cfg).items() if k not in ("seeds", "alpha")}
        cells = [{**fields, "reward": reward, "seed": ctx.seed + s} for s in range(cfg.seeds) for reward in REWARDS]
        ctx.log(f"{len(cells)} GRPO runs ({cfg.seeds} seed(s) x {len(REWARDS)} rewards, {cfg.steps} steps each)")
        outs = ctx.map(run_cell, cells, desc="perception-r1 runs")
        runs = [{"reward": c["reward"], "seed": c["seed"], **o} for c, o in zip(cells, outs)]
        from jobs.perception_r1.analysis import summarize

        summary = summarize(runs, cfg.alpha)
        for reward, s in summary.items():
            for key in ("perception", "accuracy"):
                ctx.metric(f"{key}_after", s["after"][key]["rate"], reward=reward)
        return {"runs": runs, "summary": summary}

    def plots(self, cfg: PerceptionR1Config, results: dict, ctx: JobContext) -> list[Path]:
        from jobs.perception_r1.analysis import plot_curves

        path = ctx.plot_path("reward_curves")
        plot_curves(results["runs"], path)
        return [path]

    def verdict(self, cfg: PerceptionR1Config, results: dict) -> Verdict:
        from jobs.perception_r1.analysis import markdown_table, summarize

        s = summarize(results["runs"], cfg.alpha)
        plain, percept = s["accuracy_format"], s["accuracy_format_perception"]
        plain_gain = plain["after"]["perception"]["rate"] - plain["before"]["perception"]["rate"]
        gain = percept["after"]["perception"]["rate"] - percept["before"]["perception"]["rate"]
        perceives = gain > 0 and percept["mcnemar"]["perception"]["p_value"] < cfg.alpha and gain > plain_gain
        plain_flat = not (plain_gain > 0 and plain["mcnemar"]["perception"]["p_value"] < cfg.alpha)
        answers = percept["after"]["accuracy"]["rate"] >= plain["after"]["accuracy"]["rate"]
        held = True if (perceives and plain_flat and answers) else (False if not perceives else None)
        summary = (
            f"Substitute task (generated figures, CNN+GRU policy; not a VLM). Perception correctness (both annotated "
            f"counts right, greedy, pooled over {cfg.seeds} seed(s)) went {plain['before']['perception']['rate']:.1%} -> "
            f"{plain['after']['perception']['rate']:.1%} with accuracy+format rewards (McNemar p="
            f"{plain['mcnemar']['perception']['p_value']:.2g}) and {percept['before']['perception']['rate']:.1%} -> "
            f"{percept['after']['perception']['rate']:.1%} with the perception reward added (p="
            f"{percept['mcnemar']['perception']['p_value']:.2g}); answer accuracy after RLVR "
            f"{plain['after']['accuracy']['rate']:.1%} vs {percept['after']['accuracy']['rate']:.1%}. "
            + {True: "The paper's direction held: only the perception reward improved perception significantly, "
                     "and answers were no worse.",
               False: "The perception reward did not significantly improve perception beyond the plain reward.",
               None: "Held in part: the perception reward improved perception, but the plain reward also did "
                     "significantly, or answers were worse."}[held])
        return Verdict(held, summary, markdown_table(s))
