"""Pretraining on biographies, QA fine-tuning (full or low-rank, two schedules) and evaluation.

One sweep cell = one architecture at one multiplicity: pretrain once, then fine-tune a copy of the
pretrained model for every fine-tuning size x mode x schedule, and test each on individuals seen
only in pretraining.
"""
from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from .data import World, biography_entropy
from .model import OneLayerTransformer


def lr_factor(schedule: str, step: int, total: int, warmup_frac: float = 0.05) -> float:
    """'constant': flat; 'cosine': linear warmup over the first 5% of steps, then cosine decay to 0."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        warm = max(1, int(total * warmup_frac))
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    raise ValueError(f"unknown schedule {schedule!r}: use 'constant' or 'cosine'")


def next_token_losses(model: OneLayerTransformer, seqs: torch.Tensor) -> torch.Tensor:
    logits = model(seqs[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1), seqs[:, 1:].flatten(), reduction="none").view(seqs.shape[0], -1)


@torch.no_grad()
def corpus_metrics(model: OneLayerTransformer, seqs: np.ndarray, value_pos: np.ndarray) -> dict:
    """Mean next-token loss, loss on the value (fact) tokens, and value-token accuracy."""
    model.eval()
    x = torch.from_numpy(seqs)
    logits = model(x[:, :-1])
    losses = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="none").view(x.shape[0], -1)
    vp = torch.from_numpy(value_pos)
    acc = (logits[:, vp].argmax(-1) == x[:, 1:][:, vp]).float().mean()
    model.train()
    return {"loss": float(losses.mean()), "value_loss": float(losses[:, vp].mean()), "value_acc": float(acc)}


def pretrain(model: OneLayerTransformer, corpus: np.ndarray, steps: int, batch: int, lr: float,
             rng: np.random.Generator) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    data = torch.from_numpy(corpus)
    curve = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * lr_factor("cosine", step, steps)
        idx = torch.from_numpy(rng.integers(0, len(data), size=batch))
        loss = next_token_losses(model, data[idx]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % max(1, steps // 50) == 0:
            curve.append(round(loss.item(), 4))
    return curve


@torch.no_grad()
def qa_accuracy(model: OneLayerTransformer, prompts: np.ndarray, answers: np.ndarray) -> float:
    model.eval()
    pred = model(torch.from_numpy(prompts))[:, -1].argmax(-1)
    model.train()
    return float((pred == torch.from_numpy(answers)).float().mean())


def _new_token_rows(model: OneLayerTransformer, tokens: list[int]) -> torch.nn.Parameter:
    """Let only the embedding rows of `tokens` train (a gradient mask; AdamW without weight decay then
    leaves every other row exactly as pretrained)."""
    weight = model.tok.weight
    weight.requires_grad_(True)
    mask = torch.zeros_like(weight)
    mask[tokens] = 1.0
    weight.register_hook(lambda g: g * mask)
    return weight


def finetune(pretrained: OneLayerTransformer, prompts: np.ndarray, answers: np.ndarray, *, mode: str,
             schedule: str, steps: int, batch: int, lr: float, rank: int, new_tokens: list[int],
             rng: np.random.Generator) -> tuple[OneLayerTransformer, float]:
    """Fine-tune a copy on QA pairs with the loss on the answer token only; returns (model, last loss).

    Low-rank mode trains rank-`rank` adapters of the attention and MLP matrices plus the embeddings of
    `new_tokens`, the question-format tokens that pretraining never showed (as adapter libraries train
    added tokens); everything else stays frozen."""
    model = copy.deepcopy(pretrained)
    if mode == "full":
        params = list(model.parameters())
    elif mode == "lowrank":
        params = model.add_lora(rank) + [_new_token_rows(model, new_tokens)]
    else:
        raise ValueError(f"unknown fine-tuning mode {mode!r}: use 'full' or 'lowrank'")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    x, y = torch.from_numpy(prompts), torch.from_numpy(answers)
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * lr_factor(schedule, step, steps)
        idx = torch.from_numpy(rng.integers(0, len(x), size=min(batch, len(x))))
        loss = F.cross_entropy(model(x[idx])[:, -1], y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model, loss.item()


def storage_cell(cell: dict) -> dict:
    """Pretrain one architecture at one multiplicity, then every fine-tuning variant; JSON-able results."""
    cfg = cell["cfg"]
    torch.manual_seed(cell["seed"])
    world_rng = np.random.default_rng(cfg["world_seed"])  # the same individuals in every cell
    world = World.sample(cfg["n_individuals"], cfg["n_values"], cfg["n_relations"], cfg["templates"],
                         cfg["template_len"], world_rng)
    rng = np.random.default_rng(cell["seed"])
    corpus = world.corpus(cell["multiplicity"], rng)
    model = OneLayerTransformer(world.vocab.size, cfg["d_model"], cfg["d_mlp"], corpus.shape[1],
                                use_mlp=cell["arch"] == "attention+mlp")
    started = time.perf_counter()
    curve = pretrain(model, corpus, cfg["pretrain_steps"], cfg["pretrain_batch"], cfg["pretrain_lr"], rng)
    value_pos = world.value_positions()
    fresh = world.corpus(1, np.random.default_rng(cfg["world_seed"] + 1))  # new draws of order and phrasing
    pre = {"train": corpus_metrics(model, corpus, value_pos), "fresh": corpus_metrics(model, fresh, value_pos),
           "entropy_floor": biography_entropy(cfg["n_relations"], cfg["templates"], cfg["template_len"]),
           "loss_curve": curve, "seconds": round(time.perf_counter() - started, 1)}

    order = np.random.default_rng(cfg["world_seed"] + 2).permutation(cfg["n_individuals"])
    test = order[: cfg["n_test"]]
    pool = order[cfg["n_test"]:]
    test_q, test_a = world.qa(test)
    qa_tokens = [world.vocab.q] + [world.vocab.ask(r) for r in range(cfg["n_relations"])]
    rows = []
    for size in cfg["finetune_sizes"]:
        if size > len(pool):
            raise ValueError(f"fine-tune size {size} exceeds the {len(pool)} individuals outside the test set")
        ft_q, ft_a = world.qa(pool[:size])
        for mode in cfg["finetune_modes"]:
            for schedule in cfg["schedules"]:
                ft_rng = np.random.default_rng([cell["seed"], size, len(mode), len(schedule)])
                lr = cfg["finetune_lr"] if mode == "full" else cfg["lowrank_lr"]
                tuned, last = finetune(model, ft_q, ft_a, mode=mode, schedule=schedule, steps=cfg["finetune_steps"],
                                       batch=cfg["finetune_batch"], lr=lr, rank=cfg["lowrank_rank"],
                                       new_tokens=qa_tokens, rng=ft_rng)
                rows.append({"size": size, "mode": mode, "schedule": schedule, "last_loss": round(last, 4),
                             "id_acc": qa_accuracy(tuned, ft_q, ft_a), "ood_acc": qa_accuracy(tuned, test_q, test_a)})
    return {"arch": cell["arch"], "multiplicity": cell["multiplicity"], "pretrain": pre, "finetune": rows,
            "chance": 1.0 / cfg["n_values"], "seconds": round(time.perf_counter() - started, 1)}
