"""Factual-knowledge acquisition during pretraining ("How Do Large Language Models Acquire
Factual Knowledge During Pretraining?", Chang et al., NeurIPS 2024), scaled to a CPU.

A small GPT is pretrained from scratch on an offline background corpus (corpus.py says which
and why), then training continues while the Fictional Knowledge documents are injected in three
regimes (paraphrase, duplicate, once; plus never-injected controls), and the log-probability of
every memorization, semantic-generalization and composition probe's target span is scored on a
dense schedule (experiment.py). Sweep cells: the pretraining (one cell), then the injection runs
(from the more-trained checkpoint at two batch sizes, and from a less-trained checkpoint).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from jobs.base import Job, JobContext, Verdict, register

from .report import draw_plots, judge


@dataclass
class KnowledgeAcquisitionConfig:
    # model: the paper continues OLMo-1B/7B; scaled down to a ~0.4M-parameter GPT
    d_model: int = 96
    n_layer: int = 2
    n_head: int = 4
    context: int = 96
    vocab_size: int = 2048
    # pretraining from scratch (the paper starts from OLMo checkpoints far into pretraining)
    pretrain_steps_less: int = 100
    pretrain_steps_more: int = 400
    pretrain_batch: int = 16
    lr: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 0.1  # OLMo's
    background_max_chars: int | None = None
    # injection (paper: 40 docs per regime, 10 injections every 100 steps, t_window 50)
    docs_per_regime: int = 3
    control_docs: int = 3
    n_injections: int = 10
    injection_interval: int = 10
    first_injection: int = 0
    tail_steps: int = 100
    lam_window: int = 5
    batch_sizes: tuple[int, ...] = (12, 36)  # paper: 2048 vs 128 sequences of 2048 tokens
    # probing and analysis
    probe_context: int = 48
    eval_every: int = 10
    fit_max_t: int = 80
    subtract_control_drift: bool = True  # departure, see analysis.control_drift; False = the paper's raw ell
    resume_every: int = 100


@register
class KnowledgeAcquisitionJob(Job):
    name = "knowledge-acquisition"
    title = "How Do Large Language Models Acquire Factual Knowledge During Pretraining?"
    claim = ("Facts are acquired by small log-probability gains at each encounter and then forgotten along a "
             "power law in training steps; duplicated injection is forgotten faster than paraphrased, larger "
             "batches forget more slowly, and a model that has seen more data does not acquire facts better.")
    Config = KnowledgeAcquisitionConfig
    presets = {
        "tiny": {"d_model": 64, "n_layer": 1, "n_head": 2, "context": 64, "vocab_size": 1024,
                 "background_max_chars": 200_000, "pretrain_steps_less": 20, "pretrain_steps_more": 40,
                 "pretrain_batch": 8, "warmup_steps": 5, "docs_per_regime": 2, "control_docs": 2,
                 "n_injections": 3, "injection_interval": 6, "tail_steps": 20, "lam_window": 3,
                 "batch_sizes": [8, 16], "probe_context": 24, "eval_every": 4, "fit_max_t": 15},
        "full": {},
    }

    def run(self, cfg: KnowledgeAcquisitionConfig, ctx: JobContext) -> dict:
        c = asdict(cfg)
        c["batch_sizes"] = list(cfg.batch_sizes)
        from .runs import checkpoint_path, inject_cell, pretrain

        less, more = sorted((cfg.pretrain_steps_less, cfg.pretrain_steps_more))
        out_dir = ctx.run_dir / "checkpoints"
        out_dir.mkdir(parents=True, exist_ok=True)
        cells = [{"cfg": c, "seed": ctx.seed + 1, "label": f"{more} steps, batch {b}", "batch_size": b,
                  "checkpoint": str(checkpoint_path(out_dir, more))} for b in cfg.batch_sizes]
        cells.append({"cfg": c, "seed": ctx.seed + 1, "label": f"{less} steps, batch {cfg.batch_sizes[0]}",
                      "batch_size": cfg.batch_sizes[0], "checkpoint": str(checkpoint_path(out_dir, less))})
        # counting the sweep's cells (cluster planning) must not pay for the serial pretraining
        pre = {} if getattr(ctx, "count_only", False) else pretrain(c, ctx, out_dir, [less, more])
        if pre:
            ctx.log(f"pretrained {pre['parameters']} parameters on {pre['corpus_tokens']} tokens: "
                    f"val loss {pre['val_loss']}")
        runs = ctx.map(inject_cell, cells, desc="injection runs")
        from .analysis import mean_trajectory, summarize_cell

        summaries = [summarize_cell(r, cfg.lam_window, cfg.fit_max_t, cfg.subtract_control_drift) for r in runs]
        for s in summaries:
            for group, g in s["groups"].items():
                ctx.metric("effectivity", g["effectivity_mean"], run=s["label"], group=group)
                if "decay_constant" in g["fit"]:
                    ctx.metric("decay_constant", g["fit"]["decay_constant"], run=s["label"], group=group)
        trajectories = {r["label"]: {f"{reg}/{k}": mean_trajectory(r, reg, k)
                                     for reg in ("paraphrase", "duplicate", "once", "control") for k in r["kinds"]}
                        for r in runs}
        return {"pretrain": pre, "runs": summaries, "trajectories": trajectories,
                "injection_runs": [{k: r[k] for k in ("label", "batch_size", "pretrain_steps", "total_steps",
                                                      "val_loss_before", "val_loss_after", "mean_injected_share",
                                                      "seconds")} for r in runs]}

    def verdict(self, cfg: KnowledgeAcquisitionConfig, results: dict) -> Verdict:
        return judge(cfg, results)

    def plots(self, cfg: KnowledgeAcquisitionConfig, results: dict, ctx: JobContext):
        return draw_plots(cfg, results, ctx)
