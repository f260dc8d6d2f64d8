"""The steps behind the CLI: features -> train -> export -> stack -> score.

Each step is idempotent: it skips work whose outputs are up to date, so
``make demo`` re-runs in seconds. Training steps import torch lazily; the
serving steps never do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from recast.settings import Settings


def build_features(settings: Settings, force: bool = False, dataset: str | None = None) -> dict[str, Any]:
    """Offline store of ``dataset`` (default ``settings.data.dataset``) and, when it has user
    and item ids, the Feast repository over it."""
    from features.builder import build_dataset
    from features.dataset import MOVIELENS, load_description
    from features.feast_repo import ensure_feature_store
    from features.pipeline import build_features as build_movielens

    dataset = dataset or settings.data.dataset
    if dataset == MOVIELENS:
        result = build_movielens(settings, force=force)
    else:
        description = load_description(dataset, settings.path(settings.data.dir))
        result = build_dataset(description, settings.path(settings.data.features_dir), force=force)
    servable = all(result.spec.by_entity(e) for e in ("user", "item"))  # type: ignore[arg-type]
    if servable:
        ensure_feature_store(settings)
    return {"features_dir": str(result.features_dir), "skipped": result.skipped, "meta": result.spec.meta,
            "feast": "ready" if servable else "skipped: the dataset has no user and item ids to serve by"}


def run_dir(settings: Settings, model: str) -> Path:
    return settings.path(settings.train.checkpoint_dir) / model


def train_config(settings: Settings, model: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model's recipe (training/recipes.py), then the settings that are set, then ``overrides``."""
    from training.recipes import recipe

    t = settings.train
    chosen = {k: v for k, v in {"epochs": t.epochs, "batch_size": t.batch_size, "lr": t.lr,
                                "embedding_lr": t.embedding_lr, "embedding_dim": t.embedding_dim}.items() if v is not None}
    return recipe(model, {**chosen, "patience": t.patience, "seed": t.seed, **(overrides or {})})


def train_model(settings: Settings, model: str, overrides: dict[str, Any] | None = None, nproc: int = 1,
                resume: bool = True) -> dict[str, Any]:
    """Train (or resume) one model; ``nproc`` > 1 runs torchrun with gloo ranks."""
    cfg = train_config(settings, model, overrides)
    out = run_dir(settings, model)
    features_dir = settings.path(settings.data.features_dir)
    result_file = out / "result.json"
    state_file = out / "state.json"
    if resume and result_file.exists() and state_file.exists():
        state = json.loads(state_file.read_text())
        done = state["epoch"] >= cfg["epochs"] or state["bad_epochs"] >= cfg["patience"]
        same = {k: v for k, v in state.get("config", {}).items() if k not in ("epochs", "patience", "progress")} == {
            k: v for k, v in _full_config(cfg).items() if k not in ("epochs", "patience", "progress")}
        if done and same:
            return json.loads(result_file.read_text()) | {"skipped": True}
    args = ["--features-dir", str(features_dir), "--run-dir", str(out), "--config-json", json.dumps(cfg)]
    if not resume:
        args.append("--no-resume")
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", str(_free_port()), "-m", "training.run", *args]
    else:
        cmd = [sys.executable, "-m", "training.run", *args]
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    subprocess.run(cmd, check=True, env=env, cwd=str(Path(__file__).resolve().parents[1]))
    return json.loads(result_file.read_text()) | {"skipped": False}


def _full_config(cfg: dict[str, Any]) -> dict[str, Any]:
    from dataclasses import asdict

    from training.trainer import TrainConfig

    return asdict(TrainConfig(**cfg))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def export_model(settings: Settings, model: str, version: int | None = None) -> dict[str, Any]:
    """best.pt -> ONNX (parity-checked) -> both Triton repositories as a new version."""
    from training.data import load_split
    from training.export import export_checkpoint
    from serving.model_repository import default_site_packages, list_models, write_model_repository

    best = run_dir(settings, model) / "best.pt"
    if not best.exists():
        raise FileNotFoundError(f"{best} is missing: run `recast train --model {model}` first")
    local_repo = settings.path(settings.export.local_model_repository)
    prod_repo = settings.path(settings.export.model_repository)
    existing = list_models(local_repo).get(model, [])
    latest_export = settings.path(settings.export.artifacts_dir) / model / "latest.json"
    if version is None and existing and latest_export.exists():
        info = json.loads(latest_export.read_text())
        if info.get("checkpoint_mtime") == best.stat().st_mtime and info.get("version") in existing:
            return info | {"skipped": True}
    version = version or (max(existing) + 1 if existing else 1)
    out_dir = settings.path(settings.export.artifacts_dir) / model / str(version)
    features_dir = settings.path(settings.data.features_dir)
    test = load_split(features_dir, "test")
    n = min(settings.export.parity_rows, len(test))
    dense = test.dense[:n].numpy() if test.dense.shape[1] else None
    result = export_checkpoint(best, out_dir, (test.ids[:n].numpy(), test.mask[:n].numpy(), dense),
                               max_batch=settings.export.max_batch_size)
    write_model_repository(
        result.onnx_path, _spec(out_dir), model, version, prod_repo, local_repo,
        max_batch_size=settings.export.max_batch_size,
        extra_files={"export.json": out_dir / "export.json"},
        site_packages=default_site_packages(settings),
    )
    info = {"model": model, "version": version, "onnx": str(result.onnx_path), "parity_max_abs_diff": result.parity_max_abs_diff,
            "parity_rows": result.parity_rows, "tensorrt": result.tensorrt_note, "checkpoint_mtime": best.stat().st_mtime}
    latest_export.write_text(json.dumps(info, indent=2))
    return info | {"skipped": False}


def _spec(out_dir: Path):
    from features.spec import FeatureSpec

    return FeatureSpec.load(out_dir / "spec.json")


def sample_requests(settings: Settings, n_users: int = 5, n_items: int = 20, seed: int = 7) -> list[dict[str, Any]]:
    """Real users of the test split with candidates drawn from the catalogue, plus one unknown user."""
    import numpy as np
    import polars as pl

    features_dir = settings.path(settings.data.features_dir)
    test = pl.read_parquet(features_dir / "interactions_test.parquet", columns=["user", "item"])
    items = pl.read_parquet(features_dir / "items.parquet", columns=["item"]).get_column("item").to_list()
    rng = np.random.default_rng(seed)
    users = test.get_column("user").unique(maintain_order=True).to_list()
    chosen = [users[i] for i in rng.choice(len(users), size=min(n_users, len(users)), replace=False)]
    requests = []
    for user in chosen + ["cold-start-user"]:
        seen = test.filter(pl.col("user") == user).get_column("item").to_list()[: n_items // 2]
        others = [items[i] for i in rng.choice(len(items), size=n_items - len(seen), replace=False)]
        requests.append({"user_id": user, "item_ids": list(dict.fromkeys(seen + others))})
    return requests
