"""One-layer transformers store and extract knowledge ("Filtering with Self-Attention and Storing
with MLP: One-Layer Transformers Can Provably Acquire and Extract Knowledge", Xu & Chen,
arXiv 2508.00901), on synthetic biographies.

Sweep cells = architecture (attention + MLP, attention only) x pretraining multiplicity; each cell
pretrains once and then fine-tunes on QA for every fine-tuning size x mode (full, low-rank) x
learning-rate schedule (constant, cosine), testing on individuals never seen in fine-tuning.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from jobs.base import Job, JobContext, Verdict, register

from .report import draw_plots, judge


@dataclass
class KnowledgeStorageConfig:
    # the world (the paper's experiments follow bioS; scaled down from 100k individuals)
    n_individuals: int = 200
    n_values: int = 30            # shared value pool of all relations (chance = 1/30)
    n_relations: int = 4
    templates: int = 4            # phrasings per relation
    template_len: int = 2
    world_seed: int = 0
    multiplicities: tuple[int, ...] = (1, 2, 4, 8)
    # model: one layer, one head
    architectures: tuple[str, ...] = ("attention+mlp", "attention-only")
    d_model: int = 64
    d_mlp: int = 256
    # pretraining (cosine schedule, AdamW)
    pretrain_steps: int = 1200
    pretrain_batch: int = 128
    pretrain_lr: float = 3e-3
    # QA fine-tuning on `finetune_sizes` individuals, test on `n_test` others
    n_test: int = 100
    finetune_sizes: tuple[int, ...] = (5, 15, 40, 100)
    finetune_modes: tuple[str, ...] = ("full", "lowrank")
    schedules: tuple[str, ...] = ("constant", "cosine")
    finetune_steps: int = 400
    finetune_batch: int = 32
    finetune_lr: float = 1e-3
    lowrank_lr: float = 5e-3
    lowrank_rank: int = 8
    # verdict thresholds
    high_acc: float = 0.5         # "low OOD error": accuracy at or above this
    low_acc: float = 0.25         # "high OOD error (hallucination)": accuracy below this


@register
class KnowledgeStorageJob(Job):
    name = "knowledge-storage"
    title = ("Filtering with Self-Attention and Storing with MLP: One-Layer Transformers Can Provably Acquire "
             "and Extract Knowledge")
    claim = ("A one-layer transformer with self-attention and an MLP reaches near-optimal pretraining loss on "
             "biographies; after QA fine-tuning it answers questions about individuals seen only in pretraining "
             "when fine-tuning data and pretraining multiplicity are large enough (full or low-rank fine-tuning), "
             "and hallucinates otherwise; an attention-only layer fails to acquire the facts.")
    Config = KnowledgeStorageConfig
    presets = {
        "tiny": {"n_individuals": 60, "n_values": 10, "n_test": 30, "multiplicities": [1, 6],
                 "architectures": ["attention+mlp"], "d_model": 48, "d_mlp": 192, "pretrain_steps": 500,
                 "pretrain_batch": 64, "finetune_sizes": [30], "finetune_modes": ["full"],
                 "schedules": ["constant"], "finetune_steps": 150},
        "full": {},
    }

    def run(self, cfg: KnowledgeStorageConfig, ctx: JobContext) -> dict:
        from .train import storage_cell

        c = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
        if max(cfg.finetune_sizes) > cfg.n_individuals - cfg.n_test:
            raise ValueError(f"finetune_sizes up to {max(cfg.finetune_sizes)} need n_individuals - n_test >= that")
        cells = [{"cfg": c, "seed": ctx.seed, "arch": a, "multiplicity": m}
                 for a in cfg.architectures for m in cfg.multiplicities]
        out = ctx.map(storage_cell, cells, desc="architecture x multiplicity")
        for r in out:
            ctx.metric("fresh_value_acc", r["pretrain"]["fresh"]["value_acc"], arch=r["arch"], multiplicity=r["multiplicity"])
            for row in r["finetune"]:
                ctx.metric("ood_acc", row["ood_acc"], arch=r["arch"], multiplicity=r["multiplicity"], size=row["size"],
                           mode=row["mode"], schedule=row["schedule"])
        return {"cells": out}

    def verdict(self, cfg: KnowledgeStorageConfig, results: dict) -> Verdict:
        return judge(cfg, results)

    def plots(self, cfg: KnowledgeStorageConfig, results: dict, ctx: JobContext):
        return draw_plots(cfg, results, ctx)
