"""The training recipe's pieces: optimizers, init, L2 penalty, LR decay, model selection, per-model recipes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from training.optim import (
    MIN_LR,
    build_optimizers,
    embedding_init_fn,
    l2_penalty,
    lookup_l2_penalty,
    selection_metric,
    xavier_init,
)
from training.recipes import RECIPES, recipe


def _cfg(**kw):
    base = dict(optimizer="adam", rho=0.05, lr=1e-3, weight_decay=0.0, embedding_update="dense",
                embedding_optimizer="adagrad", embedding_lr=0.05, grad_clip_scope="full")
    return SimpleNamespace(**(base | kw))


def _named():
    table, head = nn.Parameter(torch.ones(3, 2)), nn.Parameter(torch.ones(2))
    return [("module.ebc.embedding_bags.t_a.weight", table), ("module.head.w", head)], table, head


def test_build_optimizers_splits_tables_from_the_dense_part() -> None:
    named, table, head = _named()
    opts = build_optimizers(_cfg(), named)
    assert [p is head for p in opts.dense.param_groups[0]["params"]] == [True]
    assert isinstance(opts.embedding, torch.optim.Adagrad) and opts.embedding.param_groups[0]["lr"] == 0.05
    assert opts.tables == [table] and {id(p) for p in opts.clipped} == {id(table), id(head)}
    dense_only = build_optimizers(_cfg(grad_clip_scope="dense"), named)
    assert [id(p) for p in dense_only.clipped] == [id(head)]
    fused = build_optimizers(_cfg(embedding_update="fused"), named)
    assert fused.embedding is None and fused.tables == []
    with pytest.raises(ValueError, match="unknown optimizer 'nope'"):
        build_optimizers(_cfg(optimizer="nope"), named)
    with pytest.raises(ValueError, match="needs embedding_update=fused"):
        build_optimizers(_cfg(optimizer="lightsam"), named)
    sam = build_optimizers(_cfg(optimizer="lightsam", embedding_update="fused"), named)
    assert type(sam.dense).__name__ == "LightSAMAdaGradNorm" and sam.embedding is None


def test_lr_decay_multiplies_every_group_down_to_the_floor() -> None:
    named, _, _ = _named()
    opts = build_optimizers(_cfg(lr=1e-3, embedding_lr=2e-6), named)
    assert opts.decay_lr(0.1) == pytest.approx(1e-4)
    assert opts.embedding.param_groups[0]["lr"] == MIN_LR  # 2e-7 is below the floor
    opts.decay_lr(0.1)
    opts.decay_lr(0.1)
    opts.decay_lr(0.1)
    assert opts.dense.param_groups[0]["lr"] == pytest.approx(MIN_LR)


def test_l2_penalty_is_half_lambda_sum_of_squares() -> None:
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([3.0])
    assert l2_penalty([a, b], 0.1).item() == pytest.approx(0.05 * (1 + 4 + 9))
    assert l2_penalty([a], 0.0) is None
    # fused tables: the batch's looked-up embeddings, mean over examples of sum over fields
    emb = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[3.0, 0.0], [0.0, 0.0]]])  # [B=2, F=2, d=2]
    assert lookup_l2_penalty(emb, 0.1).item() == pytest.approx(0.05 * (5 + 9) / 2)


def test_selection_metric() -> None:
    assert selection_metric("auc", 0.8, 0.5) == 0.8
    assert selection_metric("auc_minus_logloss", 0.8, 0.5) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        selection_metric("accuracy", 0.8, 0.5)


def test_inits() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(400, 300)
    xavier_init(nn.Sequential(lin))
    assert lin.bias.abs().sum() == 0
    assert lin.weight.std().item() == pytest.approx((2 / (400 + 300)) ** 0.5, rel=0.05)
    w = torch.empty(1000, 16)
    embedding_init_fn(1e-4)(w)
    assert w.std().item() == pytest.approx(1e-4, rel=0.05) and abs(w.mean().item()) < 1e-5
    assert embedding_init_fn(None) is None


def test_recipes_are_valid_train_configs_and_merge_overrides() -> None:
    from training.trainer import TrainConfig

    for model in RECIPES:
        TrainConfig(**recipe(model))
    merged = recipe("dlf", {"epochs": 3, "hparams": {"variant": "att_cross"}})
    assert merged["epochs"] == 3 and merged["hparams"]["variant"] == "att_cross"
    assert {k: v for k, v in merged["hparams"].items() if k != "variant"} == {
        k: v for k, v in RECIPES["dlf"].get("hparams", {}).items() if k != "variant"}
    with pytest.raises(ValueError, match="unknown training settings"):
        recipe("dlf", {"learning_rate": 1})
