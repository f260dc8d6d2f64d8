"""S4D's two stages as sweep cells: dual-modal MAE pretraining (``pretrain_cell``) and static +
dynamic fine-tuning (``finetune_cell``: single-task, vanilla multi-task, or multi-task with the
Mixture of Adapter Experts). Each cell reads the run's arrays from an .npz and returns JSON.

Fine-tuning follows the official recipe where it scales down: AdamW, layer-wise learning-rate
decay, warmup then cosine, label smoothing 0.1, weight decay 0.05, mean pooling, MoAE
auxiliary-loss coefficient 1e-3. Not used: mixup/cutmix, RandAugment and random erasing (the
generated faces need no photometric augmentation to be varied), multi-view testing.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from jobs.s4d.classifier import ExpressionClassifier
from jobs.s4d.mae import VideoMAE
from jobs.s4d.video_vit import VideoViT

VARIANTS = ("single-dynamic", "single-static", "vanilla-mt", "moae-mt")


def build_encoder(model: dict[str, Any]) -> VideoViT:
    return VideoViT(model["image_size"], model["patch"], model["frames"], model["tubelet"], model["dim"],
                    model["depth"], model["heads"])


def _schedule(opt: torch.optim.Optimizer, total: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _batches(n: int, batch: int, rng: np.random.Generator):
    while True:
        order = rng.permutation(n)
        for i in range(0, n - batch + 1 if n >= batch else 1, batch):
            yield order[i:i + batch]


def pretrain_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """MAE pretraining on unlabelled clips, plus static images as two-frame clips when
    ``use_static``; saves the encoder to ``cell["out"]``."""
    torch.manual_seed(cell["seed"])
    rng = np.random.default_rng(cell["seed"])
    data = np.load(cell["data"])
    clips, images = torch.from_numpy(data["pretrain_clips"]), torch.from_numpy(data["pretrain_static"])[:, None]
    mae = VideoMAE(build_encoder(cell["model"]), cell["decoder_dim"], cell["decoder_depth"], mask_ratio=cell["mask_ratio"])
    opt = torch.optim.AdamW(mae.parameters(), lr=cell["lr"], betas=(0.9, 0.95), weight_decay=0.05)
    sched = _schedule(opt, cell["steps"], max(1, cell["steps"] // 10))
    gen = torch.Generator().manual_seed(cell["seed"])
    clip_batches, image_batches = _batches(len(clips), cell["batch"], rng), _batches(len(images), cell["batch"], rng)
    losses, started = [], time.perf_counter()
    for step in range(cell["steps"]):
        mae.train()
        loss = mae(clips[next(clip_batches)], gen)
        if cell["use_static"]:
            loss = (loss + mae(images[next(image_batches)], gen)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    torch.save(mae.encoder.state_dict(), cell["out"])
    tail = max(1, len(losses) // 10)
    return {"first_loss": float(np.mean(losses[:tail])), "final_loss": float(np.mean(losses[-tail:])),
            "curve": [float(np.mean(losses[i:i + tail])) for i in range(0, len(losses), tail)],
            "seconds": time.perf_counter() - started}


def _param_groups(model: ExpressionClassifier, lr: float, layer_decay: float, weight_decay: float) -> list[dict]:
    """Layer-wise lr decay (BEiT/VideoMAE): the embedding gets lr·d^(L+1), block i lr·d^(L-i),
    heads full lr; no weight decay on biases and norms."""
    depth = len(model.encoder.blocks)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if name.startswith("encoder.embed"):
            layer = 0
        elif name.startswith("encoder.blocks."):
            layer = int(name.split(".")[2]) + 1
        else:
            layer = depth + 1
        decay = p.ndim > 1
        g = groups.setdefault((layer, decay), {"params": [], "lr": lr * layer_decay ** (depth + 1 - layer),
                                                "weight_decay": weight_decay if decay else 0.0})
        g["params"].append(p)
    return list(groups.values())


@torch.no_grad()
def evaluate(model: ExpressionClassifier, x: torch.Tensor, y: np.ndarray, task: str, classes: int
             ) -> dict[str, Any]:
    """WAR (accuracy), UAR (mean per-class recall) and, with MoAE, each layer's expert shares."""
    model.eval()
    preds, counts = [], None
    layers = model.encoder.moae_layers()
    for i in range(0, len(x), 256):
        preds.append(model(x[i:i + 256], task).argmax(-1).numpy())
        if layers:
            c = np.stack([np.bincount(m.last_choice.numpy(), minlength=len(m.experts)) for m in layers])
            counts = c if counts is None else counts + c
    pred = np.concatenate(preds)
    recalls = [float((pred[y == k] == k).mean()) for k in range(classes) if (y == k).any()]
    out = {"war": float((pred == y).mean()), "uar": float(np.mean(recalls))}
    if counts is not None:
        out["expert_share"] = (counts / counts.sum(1, keepdims=True)).tolist()
    return out


def finetune_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune one variant; the epoch with the best validation score (dynamic UAR, or static
    accuracy for single-static) is the one tested."""
    variant = cell["variant"]
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: one of {VARIANTS}")
    torch.manual_seed(cell["seed"])
    rng = np.random.default_rng(cell["seed"])
    data = np.load(cell["data"])
    t = {k: torch.from_numpy(data[k]) for k in ("dyn_train_x", "dyn_val_x", "dyn_test_x")}
    s = {k: torch.from_numpy(data[k])[:, None] for k in ("st_train_x", "st_val_x", "st_test_x")}
    classes = int(data["classes"])
    encoder = build_encoder(cell["model"])
    if cell["pretrained"]:
        encoder.load_state_dict(torch.load(cell["pretrained"], weights_only=True))
    if variant == "moae-mt":
        encoder.add_moae(cell["moe_layers"], cell["num_experts"], cell["top_k"], cell["adapter_dim"],
                         cell["adapter_scale"], cell["noisy"])
    model = ExpressionClassifier(encoder, classes)
    opt = torch.optim.AdamW(_param_groups(model, cell["lr"], cell["layer_decay"], 0.05))
    steps_per_epoch = max(1, len(t["dyn_train_x"]) // cell["batch"])
    total = steps_per_epoch * cell["epochs"]
    sched = _schedule(opt, total, steps_per_epoch * cell["warmup_epochs"])
    use_dyn, use_static = variant != "single-static", variant != "single-dynamic"
    dyn_b = _batches(len(t["dyn_train_x"]), cell["batch"], rng)
    st_b = _batches(len(s["st_train_x"]), cell["batch"], rng)
    dyn_y, st_y = torch.from_numpy(data["dyn_train_y"]), torch.from_numpy(data["st_train_y"])
    best, best_state, history, started = -1.0, None, [], time.perf_counter()
    for epoch in range(cell["epochs"]):
        model.train()
        for _ in range(steps_per_epoch):
            loss = torch.zeros(())
            if use_dyn:
                i = next(dyn_b)
                loss = loss + F.cross_entropy(model(t["dyn_train_x"][i], "dynamic"), dyn_y[i], label_smoothing=0.1)
            if use_static:
                j = next(st_b)
                loss = loss + cell["static_weight"] * F.cross_entropy(model(s["st_train_x"][j], "static"), st_y[j],
                                                                      label_smoothing=0.1)
            loss = loss + cell["aux_loss_coeff"] * model.aux_loss()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        val = (evaluate(model, t["dyn_val_x"], data["dyn_val_y"], "dynamic", classes)["uar"] if use_dyn
               else evaluate(model, s["st_val_x"], data["st_val_y"], "static", classes)["war"])
        history.append(val)
        if val > best:
            best, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    out: dict[str, Any] = {"variant": variant, "val_best": best, "val_curve": history,
                           "best_epoch": int(np.argmax(history)), "seconds": time.perf_counter() - started}
    if use_dyn:
        out["dynamic"] = evaluate(model, t["dyn_test_x"], data["dyn_test_y"], "dynamic", classes)
    if use_static:
        out["static"] = evaluate(model, s["st_test_x"], data["st_test_y"], "static", classes)
    return out
