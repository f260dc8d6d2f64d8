"""Training loop: TorchRec DMP, the switchable recipe of training/optim.py (fused or
dense embedding updates, Adam/Adagrad, embedding L2, xavier and N(0, s) init, LR
decay on plateau, full or dense-only clipping), model selection on validation
AUC or AUC - logloss with early stopping, resumable checkpoints, a progress bar.
Per-model defaults chosen on validation live in training/recipes.py.

Runs as one process by default; ``torchrun --nproc_per_node N -m training.trainer``
(or ``recast train --nproc N``) shards the tables across N gloo ranks, each
rank taking an equal slice of every global batch.

Artifacts under ``checkpoint_dir/<run>``:
* ``last/``  torch.distributed.checkpoint of model + optimizers (resume; any world size)
* ``state.json``  epoch, best AUC, patience counter, history
* ``best.pt``  unsharded weights of the best epoch + spec + config (export input)
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from tqdm import tqdm

from features.spec import FeatureSpec
from training.data import CTRData, batches, load_split
from training.distributed import gather_full_state, init_distributed, wrap_model
from training.metrics import ExpertCorrelation, correlation_from_moments, log_loss, roc_auc
from training.models import build_head, make_config
from training.optim import (
    Optimizers,
    build_optimizers,
    embedding_init_fn,
    l2_penalty,
    lookup_l2_penalty,
    needs_closure,
    selection_metric,
    xavier_init,
)
from training.sharpness import DenseSharpnessStep
from training.sparse import CTRModel, padded_to_kjt


@dataclass
class TrainConfig:
    model: str = "dlf"
    hparams: dict[str, Any] = field(default_factory=dict)
    embedding_dim: int = 16
    epochs: int = 10
    batch_size: int = 4096
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    """Dense-parameter optimizer (training/optim/registry.py): adam, adagrad, sgd, sam, lightsam
    (= lightsam-adagradnorm), lightsam-adagrad, lightsam-adam."""
    rho: float = 0.05
    """Perturbation radius of the sharpness-aware optimizers (sam, lightsam-*)."""
    embedding_update: Literal["fused", "dense"] = "fused"
    embedding_optimizer: str = "adagrad"
    embedding_lr: float = 0.05
    embedding_l2: float = 0.0
    """Embedding L2 (dense: lambda/2 ||W||^2 over whole tables; fused: on the batch's lookups, training/optim.py)."""
    init: Literal["default", "xavier"] = "default"
    """Head init: PyTorch's defaults, or FuxiCTR's xavier-normal Linear weights and zero biases."""
    embedding_init_std: float | None = None
    """N(0, std^2) tables (FuxiCTR: 1e-4); None keeps TorchRec's uniform init."""
    lr_decay: float = 1.0
    """Multiply learning rates by this after an epoch without improvement (FuxiCTR: 0.1; 1 = off)."""
    monitor: Literal["auc", "auc_minus_logloss"] = "auc"
    """Model selection and early stopping on validation AUC or AUC - logloss."""
    patience: int = 2
    seed: int = 2019
    grad_clip: float = 10.0
    grad_clip_scope: Literal["dense", "full"] = "dense"
    """Clip the dense part's gradient norm, or the full model's (needs embedding_update=dense)."""
    eval_batch_size: int = 8192
    max_steps_per_epoch: int | None = None
    progress: bool = True


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    val_auc: float
    test_auc: float
    test_logloss: float
    history: list[dict[str, float]]
    seconds: float
    examples_per_second: float
    test_expert_correlation: float = float("nan")
    """Cross-Expert Correlation on the test split (mixture-of-experts models only)."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _head(dmp: torch.nn.Module) -> torch.nn.Module:
    return dmp.module.head


def predict(dmp: torch.nn.Module, spec: FeatureSpec, data: CTRData, batch_size: int) -> tuple[np.ndarray, float]:
    """Probabilities for every row of ``data`` (all ranks take part, all get the result),
    and the Cross-Expert Correlation over the set for mixture-of-experts heads (NaN otherwise)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    dmp.eval()
    chunks: list[torch.Tensor] = []
    head = _head(dmp)
    experts = ExpertCorrelation() if hasattr(head, "decorrelation_targets") else None
    with torch.no_grad():
        for batch, real in batches(data, batch_size, rank, world):
            probs = torch.sigmoid(dmp(padded_to_kjt(spec, batch.ids, batch.mask), batch.dense))
            if experts is not None and real:
                experts.update(head.decorrelation_targets()[:, :real].numpy())
            if world > 1:
                gathered = [torch.empty_like(probs) for _ in range(world)]
                reals = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
                dist.all_gather(gathered, probs)
                dist.all_gather(reals, torch.tensor([real]))
                chunks.extend(g[: int(r)] for g, r in zip(gathered, reals))
            else:
                chunks.append(probs[:real])
    dmp.train()
    correlation = float("nan")
    if experts is not None:
        n, sums, cross = experts.moments()
        if world > 1:  # exact over the whole set: add up every rank's moments
            packed = torch.from_numpy(np.concatenate([[n], sums.ravel(), cross.ravel()]))
            dist.all_reduce(packed)
            packed = packed.numpy()
            n, sums, cross = int(packed[0]), packed[1 : 1 + sums.size].reshape(sums.shape), packed[1 + sums.size :].reshape(cross.shape)
        correlation = correlation_from_moments(n, sums, cross)
    return torch.cat(chunks).numpy(), correlation


def _resumable(config: dict) -> dict:
    """Fields that must match for a checkpoint to continue (more epochs or patience is fine)."""
    return {k: v for k, v in config.items() if k not in ("epochs", "patience", "progress")}


def _save_checkpoint(run_dir: Path, dmp: torch.nn.Module, optimizers: Optimizers, state: dict) -> None:
    # dense weights are replicated (DDP): their optimizer and RNG state are saved per rank
    rank = dist.get_rank()
    torch.save({"rng": torch.get_rng_state(), "optimizers": optimizers.state_dict()}, run_dir / f"local_rank{rank}.pt")
    dcp.save(
        {"model": dmp.state_dict(), "fused_opt": dmp.fused_optimizer.state_dict()},
        checkpoint_id=str(run_dir / "last"),
    )
    if dist.get_rank() == 0:
        tmp = run_dir / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(run_dir / "state.json")
    dist.barrier()


def _load_checkpoint(run_dir: Path, dmp: torch.nn.Module, optimizers: Optimizers) -> dict:
    target = {"model": dmp.state_dict(), "fused_opt": dmp.fused_optimizer.state_dict()}
    dcp.load(target, checkpoint_id=str(run_dir / "last"))
    dmp.load_state_dict(target["model"])
    dmp.fused_optimizer.load_state_dict(target["fused_opt"])
    local = run_dir / f"local_rank{dist.get_rank()}.pt"
    if not local.exists():  # resumed with more ranks than saved it: rank 0's copy is identical
        local = run_dir / "local_rank0.pt"
    saved = torch.load(local, weights_only=False)
    optimizers.load_state_dict(saved["optimizers"])
    torch.set_rng_state(saved["rng"])
    return json.loads((run_dir / "state.json").read_text())


def train(
    cfg: TrainConfig,
    features_dir: Path,
    run_dir: Path,
    resume: bool = True,
) -> TrainResult:
    rank, world = init_distributed()
    seed_everything(cfg.seed)
    spec = FeatureSpec.load(features_dir / "spec.json")
    train_data, val_data, test_data = (load_split(features_dir, s, spec) for s in ("train", "val", "test"))

    if cfg.grad_clip_scope == "full" and cfg.embedding_update != "dense":
        raise ValueError("grad_clip_scope=full needs embedding_update=dense: fused tables never expose their gradients")
    head = build_head(cfg.model, len(spec.sparse), cfg.embedding_dim, len(spec.dense), make_config(cfg.model, cfg.hparams))
    if cfg.init == "xavier":
        xavier_init(head)
    model = CTRModel(spec, head, device=torch.device("meta"), init_fn=embedding_init_fn(cfg.embedding_init_std))
    dmp = wrap_model(model, cfg.embedding_optimizer, cfg.embedding_lr, cfg.embedding_update)
    optimizers = build_optimizers(cfg, dmp.named_parameters())

    def embedding_penalty() -> torch.Tensor | None:
        if not cfg.embedding_l2:
            return None
        if cfg.embedding_update == "dense":
            return l2_penalty(optimizers.tables, cfg.embedding_l2)
        return lookup_l2_penalty(dmp.module.last_field_emb, cfg.embedding_l2)

    auxiliary_loss = getattr(_head(dmp), "auxiliary_loss", None)  # mixture-of-experts heads
    sharpness = None
    if needs_closure(optimizers.dense):  # sharpness-aware: a second pass at perturbed dense weights
        dense_params = [p for group in optimizers.dense.param_groups for p in group["params"]]
        sharpness = DenseSharpnessStep(dmp, dmp.module.ebc, optimizers.dense, dense_params, cfg.grad_clip)

    run_dir.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"epoch": 0, "best_auc": -1.0, "best_metric": -float("inf"), "best_epoch": 0,
                             "bad_epochs": 0, "history": []}
    if resume and (run_dir / "state.json").exists() and (run_dir / "last").exists():
        saved = json.loads((run_dir / "state.json").read_text())
        if _resumable(saved.get("config", {})) == _resumable(json.loads(json.dumps(asdict(cfg)))):
            state = _load_checkpoint(run_dir, dmp, optimizers)
            if rank == 0:
                print(f"resumed {run_dir} after epoch {state['epoch']} (best AUC {state['best_auc']:.4f})")
        elif rank == 0:
            print(f"{run_dir}: checkpoint was made with another configuration; starting over")
    state["config"] = asdict(cfg)

    generator = torch.Generator().manual_seed(cfg.seed)
    for _ in range(state["epoch"]):  # same shuffles as an uninterrupted run
        torch.randperm(len(train_data), generator=generator)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    started, seen = time.perf_counter(), 0
    while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience:
        epoch = state["epoch"] + 1
        steps = len(train_data) // cfg.batch_size
        if steps == 0:
            raise ValueError(f"batch_size {cfg.batch_size} is larger than the {len(train_data)} training rows")
        if cfg.max_steps_per_epoch:
            steps = min(steps, cfg.max_steps_per_epoch)
        bar = tqdm(total=steps, desc=f"{cfg.model} epoch {epoch}", disable=(not cfg.progress or rank != 0) or None, leave=False)  # None: off when not a terminal
        running = None
        for step, (batch, _) in enumerate(batches(train_data, cfg.batch_size, rank, world, shuffle=True, generator=generator, drop_last=True)):
            if step >= steps:
                break
            logits = dmp(padded_to_kjt(spec, batch.ids, batch.mask), batch.dense)
            loss = loss_fn(logits, batch.labels)
            if auxiliary_loss is not None:
                loss = loss + auxiliary_loss()
            penalty = embedding_penalty()
            if penalty is not None:
                loss = loss + penalty
            optimizers.zero_grad()
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(optimizers.clipped, cfg.grad_clip)
            if sharpness is None:
                optimizers.step()
            else:  # sharpness-aware (fused tables only): the loss again, at perturbed dense weights
                sharpness.step(lambda: loss_fn(dmp(padded_to_kjt(spec, batch.ids, batch.mask), batch.dense), batch.labels)
                               + (auxiliary_loss() if auxiliary_loss is not None else 0.0))
            seen += len(batch) * world
            running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
            bar.set_postfix(loss=f"{running:.4f}", val_auc=f"{state['best_auc']:.4f}")
            bar.update()
        bar.close()
        probs, val_corr = predict(dmp, spec, val_data, cfg.eval_batch_size)
        val_auc, val_ll = roc_auc(val_data.labels.numpy(), probs), log_loss(val_data.labels.numpy(), probs)
        state["history"].append({"epoch": epoch, "train_loss": running or float("nan"), "val_auc": val_auc,
                                 "val_logloss": val_ll, "val_expert_correlation": val_corr,
                                 "lr": optimizers.dense.param_groups[0]["lr"]})
        state["epoch"] = epoch
        if np.isnan(val_auc):
            raise ValueError("the validation split has a single class: AUC is undefined, early stopping cannot work")
        metric = selection_metric(cfg.monitor, val_auc, val_ll)
        improved = metric > state["best_metric"] + 1e-6
        if improved:
            state.update(best_auc=val_auc, best_metric=metric, best_epoch=epoch, bad_epochs=0)
            full = gather_full_state(dmp)
            if rank == 0:
                torch.save(
                    {"model": cfg.model, "hparams": asdict(head_config(cfg)), "embedding_dim": cfg.embedding_dim,
                     "spec": spec.to_json(), "state_dict": full, "val_auc": val_auc, "epoch": epoch},
                    run_dir / "best.pt",
                )
        else:
            state["bad_epochs"] += 1
            if cfg.lr_decay != 1.0:
                fused = dmp.fused_optimizer if cfg.embedding_update == "fused" else None
                state["lr"] = optimizers.decay_lr(cfg.lr_decay, fused)
        if rank == 0:
            flag = "*" if improved else " "
            corr = "" if np.isnan(val_corr) else f"  expert corr {val_corr:.4f}"
            print(f"{cfg.model} epoch {epoch:2d}{flag} loss {running:.4f}  val AUC {val_auc:.4f}  logloss {val_ll:.4f}{corr}", flush=True)
        _save_checkpoint(run_dir, dmp, optimizers, state)
    elapsed = time.perf_counter() - started

    # test metrics with the best weights
    best = torch.load(run_dir / "best.pt", weights_only=False) if rank == 0 else None
    nan = float("nan")
    test_auc, test_ll, test_corr = _test_with_best(cfg, spec, best, test_data) if rank == 0 else (nan, nan, nan)
    if rank == 0:
        result = {"test_auc": test_auc, "test_logloss": test_ll, "best_epoch": state["best_epoch"], "val_auc": state["best_auc"]}
        if not np.isnan(test_corr):
            result["test_expert_correlation"] = test_corr
        (run_dir / "result.json").write_text(json.dumps(result, indent=2))
    dist.barrier()
    return TrainResult(run_dir, state["best_epoch"], state["best_auc"], test_auc, test_ll, state["history"], elapsed,
                       seen / max(elapsed, 1e-9), test_corr)


def head_config(cfg: TrainConfig) -> Any:
    return make_config(cfg.model, cfg.hparams)


def _test_with_best(cfg: TrainConfig, spec: FeatureSpec, best: dict, data: CTRData) -> tuple[float, float, float]:
    """Score the test split with the unsharded best weights (the exported model's path):
    AUC, log loss, and the Cross-Expert Correlation for mixture-of-experts heads."""
    from training.export import inference_model_from_checkpoint

    model = inference_model_from_checkpoint(best)
    experts = ExpertCorrelation() if hasattr(model.head, "decorrelation_targets") else None
    chunks = []
    with torch.no_grad():
        for b, real in batches(data, cfg.eval_batch_size):
            chunks.append(model(b.ids, b.mask, b.dense if b.dense.shape[1] else None)[:real, 0])
            if experts is not None:
                experts.update(model.head.decorrelation_targets()[:, :real].numpy())
    probs = torch.cat(chunks).numpy()
    corr = experts.value() if experts is not None else float("nan")
    return roc_auc(data.labels.numpy(), probs), log_loss(data.labels.numpy(), probs), corr
