"""O²-Searcher (Mei et al., 2025): a search agent trained with RL on a locally simulated search
environment; the unified rewards (exact match for closed questions; format, key-findings F1 and
query diversity for open ones) should train an agent that answers open-ended questions better
than one trained with the closed-question reward alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.base import Job, JobContext, Verdict, register


@dataclass
class O2SearcherConfig:
    policy_model: str | None = None
    """A Hugging Face causal LM (directory or hub name) to train; None: the local default model;
    "tiny": the small copy policy of jobs/o2_searcher/tiny_policy.py (seconds on a CPU)."""
    device: str = "auto"
    """auto (cuda when available, bf16 where supported), cpu, cuda, ..."""
    open_train: int | None = None
    """Open-ended training questions from o2qa_train_gt.json (None: all 240)."""
    open_test: int | None = None
    """Open-ended test questions from o2qa_test_gt.json (None: all 60)."""
    closed_train: int = 400
    closed_test: int = 100
    retrieval: str = "hybrid"
    """bm25, dense (MiniLM) or hybrid (reciprocal-rank fusion of both)."""
    top_k: int = 3
    max_turns: int = 2
    max_new_tokens: int = 96
    temperature: float = 1.0
    warm_start_steps: int = 30
    """Supervised steps on protocol demonstrations before RL (jobs/o2_searcher/warmstart.py); 0: none."""
    warm_start_batch: int = 8
    warm_start_lr: float = 5e-5
    steps: int = 40
    prompts_per_step: int = 4
    group_size: int = 4
    lr: float = 1e-6
    clip_eps: float = 0.2
    kl_beta: float = 0.001
    w_format: float = 1.0
    w_factual: float = 1.0
    w_diversity: float = 0.5
    match_threshold: float = 0.75
    eval_batch: int = 16
    micro_batch: int = 2
    """Trajectories per forward/backward pass (gradients accumulate over the batch): bounds memory."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass: ~4x less memory for ~30% more compute."""
    threads: int = 1


def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    from jobs.o2_searcher.train import run_variant

    return run_variant(cell)


@register
class O2SearcherJob(Job):
    name = "o2-searcher"
    title = ("O²-Searcher: A Searching-based Agent Model for Open-Domain Open-Ended Question Answering "
             "(Mei et al., 2025)")
    claim = ("Training a search agent with GRPO and unified rewards -- exact match for closed-ended questions; "
             "format, key-findings F1 and query diversity for open-ended ones -- gives better open-ended answers "
             "(higher findings F1) than the untrained agent and than training with the closed-question reward alone.")
    Config = O2SearcherConfig
    presets = {
        # CI-sized (~30 s on 2 cores): the small copy policy of tiny_policy.py in the same environment,
        # protocol, rewards and GRPO loop; a weak warm start leaves GRPO room to raise the reward, and
        # DeepSeekMath's KL weight keeps its large steps from collapsing the policy
        "tiny": {"policy_model": "tiny", "device": "cpu", "open_train": 20, "open_test": 4, "closed_train": 200,
                 "closed_test": 60, "retrieval": "bm25", "max_new_tokens": 48, "warm_start_steps": 30,
                 "warm_start_lr": 3e-3, "steps": 30, "prompts_per_step": 8, "group_size": 4, "lr": 1e-2, "kl_beta": 0.04,
                 "micro_batch": 32, "eval_batch": 64},
        # bounded for a shared 2-core CPU (a GRPO step of 8 rollouts takes ~30 s or more there)
        "full": {"open_test": 10, "closed_test": 10, "steps": 6, "prompts_per_step": 2, "group_size": 4,
                 "max_new_tokens": 32, "warm_start_steps": 10, "warm_start_batch": 4, "lr": 1e-5,
                 "eval_batch": 10},
    }

    def run(self, cfg: O2SearcherConfig, ctx: JobContext) -> dict:
        from jobs.o2_searcher.train import VARIANTS

        cells = [{**vars(cfg), "variant": v, "seed": ctx.seed} for v in VARIANTS]
        ctx.log(f"variants {', '.join(VARIANTS)}: {cfg.steps} GRPO steps of {cfg.prompts_per_step} x {cfg.group_size}")
        outs = ctx.map(run_cell, cells, desc="o2-searcher variants")
        from jobs.o2_searcher.analysis import summarize

        summary = summarize(outs)
        for variant, s in summary.items():
            for key, p in s.items():
                if isinstance(p, dict) and "mean" in p:
                    ctx.metric(key, p["mean"], variant=variant)
        return {"variants": outs, "summary": summary}

    def plots(self, cfg: O2SearcherConfig, results: dict, ctx: JobContext) -> list[Path]:
        from jobs.o2_searcher.analysis import plot_curves

        path = ctx.plot_path("reward_curves")
        plot_curves(results["variants"], path)
        return [path]

    def verdict(self, cfg: O2SearcherConfig, results: dict) -> Verdict:
        from jobs.o2_searcher.analysis import markdown_table, summarize

        s = summarize(results["variants"])
        f1 = {v: s[v]["open_f1"] for v in s}
        unified, closed, untrained = f1["unified"], f1["closed"], f1["untrained"]
        beats = [unified["mean"] > other["mean"] and unified["low"] > other["mean"] for other in (closed, untrained)]
        held = True if all(beats) else (None if unified["mean"] > max(closed["mean"], untrained["mean"]) else False)
        summary = (f"Open-ended findings F1 on {s['unified']['open_f1']['n']} test questions: untrained "
                   f"{untrained['mean']:.3f}, closed-reward {closed['mean']:.3f}, unified {unified['mean']:.3f}; closed "
                   f"EM: untrained {s['untrained']['closed_em']['mean']:.2f}, closed-reward "
                   f"{s['closed']['closed_em']['mean']:.2f}, unified {s['unified']['closed_em']['mean']:.2f}. "
                   + {True: "The unified rewards gave clearly better open-ended answers (the lower end of their "
                            "interval above both others' means).",
                      None: "The unified rewards were ahead on open-ended F1, but within the noise.",
                      False: "The unified rewards did not give better open-ended answers at this scale."}[held])
        searched = s["unified"]["open_searched"]["mean"]
        if searched < 0.5:   # a shortcut: the format reward is earned without searching
            held = None if held else held
            summary += (f" But the unified agent searched on only {searched:.0%} of the open questions: its findings "
                        "did not come from a search (the format reward pays for any list of findings).")
        return Verdict(held, summary, markdown_table(s))
