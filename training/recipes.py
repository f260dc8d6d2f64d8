"""Per-model training recipes: TrainConfig defaults chosen on the validation split.

``recipe(model)`` is what ``recast train --model M`` and benchmarks/quality.py
start from; explicit settings and ``--set`` values override it. Every entry
was chosen on MovieLens-100K validation AUC (random 80/10/10 split, seed
2019), never on test; the sweeps behind them are listed beside each entry.
``OFFICIAL_FUXICTR`` is the recipe of the official DLF code (FuxiCTR's
BaseModel with the DLF_default config): Adam 1e-3 on everything, xavier-normal
Linear init, N(0, 1e-4) embeddings, LR x0.1 on plateau, selection on
AUC - logloss, clipping of the full model at 10, batch 10,000, d = 64.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

OFFICIAL_FUXICTR: dict[str, Any] = {
    "embedding_update": "dense", "embedding_optimizer": "adam", "embedding_lr": 1e-3, "lr": 1e-3,
    "init": "xavier", "embedding_init_std": 1e-4, "lr_decay": 0.1, "monitor": "auc_minus_logloss",
    "grad_clip": 10.0, "grad_clip_scope": "full", "batch_size": 10_000, "embedding_dim": 64,
}

RECIPES: dict[str, dict[str, Any]] = {
    # emb lr 0.05 bs 4096 val 0.7718 (still rising at 20 ep); 0.2 bs 4096 0.7745; 0.5 0.7734; 0.2 bs 1024 0.7751 <-
    "lr": {"embedding_lr": 0.2, "batch_size": 1024, "epochs": 40},
    # defaults bs 4096 val 0.7820; bs 1024 0.7856 <-
    "deepfm": {"batch_size": 1024, "epochs": 15},
    # defaults bs 4096 val 0.7845; bs 1024 0.7866 <-
    "dcnv2": {"batch_size": 1024, "epochs": 20},
    "finalmlp": {"batch_size": 1024, "epochs": 15},
    # the earlier reading: 1 layer, 8/8/8 tokens, rank 8, bs 512: val 0.7833 <-
    "dlf_branch_softmax": {"batch_size": 512, "epochs": 12,
                           "hparams": {"num_layers": 1, "n_low_rank": 8, "n_high_rank": 8, "n_implicit": 8, "rank": 8}},
    # DLF (official variant "dlf"), seed 2019, val / test AUC. The official size (3 layers, 16/16 tokens,
    # rank 24, 512-unit blocks: 3.8M dense parameters) trains at 0.16x DCN-V2's samples/s; the small
    # one below at ~1x. Small, fused Adagrad, bs 1024: 0.7795 / 0.7820 (best epoch 2); + embedding L2
    # 1e-3 0.7795, 1e-2 0.7800 / 0.7822 <-, 1e-1 0.7735; bs 512 0.7773; dropout 0.2 0.7761; 2 layers
    # 0.7748; linear head 0.7724; OFFICIAL_FUXICTR at d 16, bs 1024 0.7737 (DCN-V2 likewise: 0.7787
    # vs 0.7863 with its own recipe). Variants (small, fused): att_cross 0.7789, att_self_gate 0.7777
    # (0.7603 with OFFICIAL_FUXICTR).
    "dlf": {"batch_size": 1024, "epochs": 20, "embedding_l2": 0.01,
            "hparams": {"num_layers": 1, "n_compress": 8, "n_fm": 8, "rank": 8, "block_hidden": 128, "head_hidden": 256}},
    # seed 2019: bs 1024 0.7843 / 0.7919 <-; bs 512 0.7839; DCN-V2-sized experts (400x3, dropout 0.2) 0.7815;
    # embedding L2 1e-2 0.7845 (no real gain); embedding lr 0.02 0.7832; dropout 0.3 0.7833
    "dmoe": {"batch_size": 1024, "epochs": 20},
}


def recipe(model: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """TrainConfig fields for ``model``: its recipe, then ``overrides`` (hparams merged key by key)."""
    from training.trainer import TrainConfig

    base = {k: (dict(v) if isinstance(v, dict) else v) for k, v in RECIPES.get(model, {}).items()}
    overrides = dict(overrides or {})
    hparams = {**base.pop("hparams", {}), **overrides.pop("hparams", {})}
    out = {"model": model, **base, **overrides}
    if hparams:
        out["hparams"] = hparams
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(out) - known)
    if unknown:
        raise ValueError(f"unknown training settings {unknown}; known: {sorted(known)}")
    return out
