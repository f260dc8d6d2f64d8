"""Shared fixtures: a small synthetic CTR dataset in the offline-store layout."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from features.spec import FeatureSpec, SparseFeature

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def write_synthetic_features(out: Path, n: int = 6000, seed: int = 0) -> FeatureSpec:
    """Parquet splits with a learnable signal (user x item affinity + genre effect)."""
    rng = np.random.default_rng(seed)
    n_users, n_items, n_genres = 60, 80, 7
    user_bias = rng.normal(0, 1, n_users + 1)
    item_bias = rng.normal(0, 1, n_items + 1)
    genre_bias = rng.normal(0, 1, n_genres + 1)
    item_genres = [list(rng.choice(np.arange(1, n_genres + 1), size=rng.integers(0, 4), replace=False)) for _ in range(n_items + 1)]
    users = rng.integers(1, n_users + 1, n)
    items = rng.integers(1, n_items + 1, n)
    gender = (users % 2) + 1
    logit = user_bias[users] + item_bias[items] + np.array([genre_bias[g].sum() if len(g) else 0 for g in (item_genres[i] for i in items)]) + 0.8 * (gender == 2) * (items % 3 == 0)
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    frame = pl.DataFrame(
        {
            "user": [str(u) for u in users],
            "item": [str(i) for i in items],
            "timestamp": np.arange(n, dtype=np.int64),
            "label": labels,
            "user_id": users.astype(np.int64),
            "item_id": items.astype(np.int64),
            "gender": gender.astype(np.int64),
            "genres": [[int(g) for g in item_genres[i]] for i in items],
        },
        schema_overrides={"genres": pl.List(pl.Int64)},
    )
    spec = FeatureSpec(
        sparse=(
            SparseFeature("user_id", n_users + 1, "user"),
            SparseFeature("item_id", n_items + 1, "item"),
            SparseFeature("gender", 3, "user"),
            SparseFeature("genres", n_genres + 1, "item", max_len=3),
        ),
        meta={"dataset": "synthetic"},
    )
    out.mkdir(parents=True, exist_ok=True)
    spec.save(out / "spec.json")
    cut1, cut2 = int(0.8 * n), int(0.9 * n)
    frame[:cut1].write_parquet(out / "interactions_train.parquet")
    frame[cut1:cut2].write_parquet(out / "interactions_val.parquet")
    frame[cut2:].write_parquet(out / "interactions_test.parquet")
    return spec


@pytest.fixture(scope="session")
def synthetic_features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic_features")
    write_synthetic_features(out)
    return out
