"""One grid cell of the LightSAM job: train with one optimizer at one (ρ, η, seed), return the
validation score (what the grid statistics use) and the test score (reported for the cell
chosen on validation). Module-level functions: ``JobContext.map`` sends them to processes."""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHANCE = {"digits": 0.1, "ctr": 0.5}
"""Score of a diverged run: accuracy of guessing among 10 classes, AUC of a constant."""


def digits_split(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """scikit-learn's digits (1,797 8x8 images), pixels scaled to [0, 1], a fixed stratified
    60/20/20 train/val/test split (the same for every cell; cells differ in init and order)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, random_state=seed, stratify=y)
    x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5, random_state=seed, stratify=y_rest)
    to = lambda a, b: (torch.from_numpy(a), torch.from_numpy(b).long())  # noqa: E731
    return {"train": to(x_train, y_train), "val": to(x_val, y_val), "test": to(x_test, y_test)}


def _accuracy(model: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> float:
    with torch.no_grad():
        logits = model(data[0])
    if not torch.isfinite(logits).all():
        return CHANCE["digits"]
    return float((logits.argmax(1) == data[1]).float().mean())


def digits_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """Train the MLP on digits; the optimizer's closure recomputes the minibatch loss."""
    from jobs.lightsam.models import DigitsMLP
    from training.optim import make_optimizer, needs_closure

    torch.set_num_threads(1)
    data = digits_split()
    torch.manual_seed(cell["seed"])
    model = DigitsMLP(hidden=cell["hidden"])
    opt = make_optimizer(cell["optimizer"], model.parameters(), lr=cell["eta"], rho=cell["rho"] or 0.0)
    x, y = data["train"]
    generator = torch.Generator().manual_seed(cell["seed"])
    loss_fn = torch.nn.CrossEntropyLoss()
    diverged, last = False, float("nan")
    for _ in range(cell["epochs"]):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), cell["batch_size"]):
            idx = order[start : start + cell["batch_size"]]
            xb, yb = x[idx], y[idx]

            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss = loss_fn(model(xb), yb)
                loss.backward()
                return loss

            loss = closure()
            opt.step(closure) if needs_closure(opt) else opt.step()
            last = float(loss.detach())
            if not math.isfinite(last) or last > 1e6:
                diverged = True
                break
        if diverged:
            break
    return {"val": CHANCE["digits"] if diverged else _accuracy(model, data["val"]),
            "test": CHANCE["digits"] if diverged else _accuracy(model, data["test"]),
            "train_loss": last if math.isfinite(last) else None, "diverged": diverged}


def ctr_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """Train a CTR model through the project's trainer (TorchRec; the optimizer on the dense
    parameters, Adagrad on the tables as always); validation/test AUC."""
    from training.trainer import TrainConfig, train

    torch.set_num_threads(1)
    cfg = TrainConfig(model=cell["model"], optimizer=cell["optimizer"], lr=cell["eta"], rho=cell["rho"] or 0.0,
                      epochs=cell["epochs"], batch_size=cell["batch_size"], max_steps_per_epoch=cell["steps_per_epoch"],
                      seed=cell["seed"], patience=cell["epochs"], progress=False)
    scratch = Path(tempfile.mkdtemp(prefix="lightsam-ctr-"))
    try:
        result = train(cfg, Path(cell["features_dir"]), scratch, resume=False)
    except (ValueError, RuntimeError) as exc:  # NaN weights end in errors deep in the metrics
        return {"val": CHANCE["ctr"], "test": CHANCE["ctr"], "train_loss": None, "diverged": True, "error": str(exc)[:200]}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    losses = [h["train_loss"] for h in result.history]
    diverged = not all(math.isfinite(v) for v in losses) or not math.isfinite(result.val_auc)
    return {"val": CHANCE["ctr"] if diverged else result.val_auc, "test": CHANCE["ctr"] if diverged else result.test_auc,
            "train_loss": losses[-1] if losses and math.isfinite(losses[-1]) else None, "diverged": diverged,
            "best_epoch": result.best_epoch}
