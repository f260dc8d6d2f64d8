"""A generated ratings dataset in plain CSV plus its YAML description (tests, smoke runs).

The label has structure a model can learn (user taste x item genre, item
popularity, user age group), the files have the real world's awkward cases
(an item with no genre, users and items never rated, ISO date-times), and the
description exercises every field type the builder knows.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

GENRES = ("action", "comedy", "drama", "horror", "romance", "scifi")

DESCRIPTION = """\
name: {name}
interactions: {{path: ratings.csv, user: user_id, item: item_id, timestamp: rated_at}}
items: {{path: items.csv, key: item_id}}
users: {{path: users.csv, key: user_id, optional: true}}
label: {{column: stars, rule: ">= 4"}}
fields:
  - {{name: user_id, entity: user}}
  - {{name: item_id, entity: item}}
  - {{name: genres, entity: item, type: multi, separator: "|", max_len: 3}}
  - {{name: price, entity: item, type: numeric, numeric: log2}}
  - {{name: age, entity: user, type: numeric, numeric: buckets, boundaries: [25, 35, 50]}}
  - {{name: country, entity: user}}
  - {{name: device, entity: context}}
split: {{kind: {split}, fractions: [0.8, 0.1, 0.1], seed: 7}}
"""


def generate_ratings_csv(directory: Path, n_users: int = 60, n_items: int = 40, n_ratings: int = 3000,
                         seed: int = 0, with_users: bool = True, split: str = "random",
                         name: str = "shop") -> Path:
    """Write ratings.csv, items.csv (and users.csv) and ``dataset.yaml``; returns the YAML path."""
    rng = np.random.default_rng(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    item_genres = [list(rng.choice(GENRES, size=int(rng.integers(1, 3)), replace=False)) for _ in range(n_items)]
    item_genres[-2] = []  # an item without genres
    taste = rng.integers(0, len(GENRES), size=n_users)
    ages = rng.integers(16, 70, size=n_users)
    popularity = rng.normal(0, 1, size=n_items)
    users = rng.integers(0, n_users - 1, size=n_ratings)  # the last user never rates
    items = rng.integers(0, n_items - 1, size=n_ratings)  # the last item is never rated
    likes = np.array([GENRES[taste[u]] in item_genres[i] for u, i in zip(users, items)])
    logit = -0.3 + 1.6 * likes + 0.8 * popularity[items] + 0.5 * (ages[users] > 40)
    stars = np.clip(np.round(3 + 1.2 * logit + rng.normal(0, 0.8, size=n_ratings)), 1, 5).astype(int)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    stamps = sorted(start + timedelta(minutes=int(m)) for m in rng.integers(0, 60 * 24 * 90, size=n_ratings))
    pl.DataFrame({
        "user_id": [f"u{u}" for u in users], "item_id": [f"i{i}" for i in items], "stars": stars,
        "rated_at": [s.strftime("%Y-%m-%dT%H:%M:%S") for s in stamps],
        "device": rng.choice(["ios", "android", "web", ""], size=n_ratings).tolist(),
    }).write_csv(directory / "ratings.csv")
    pl.DataFrame({
        "item_id": [f"i{i}" for i in range(n_items)], "title": [f"Item {i}" for i in range(n_items)],
        "genres": ["|".join(g) for g in item_genres], "price": np.round(rng.lognormal(2, 1, size=n_items), 2),
    }).write_csv(directory / "items.csv")
    if with_users:
        pl.DataFrame({
            "user_id": [f"u{u}" for u in range(n_users)], "age": ages,
            "country": rng.choice(["de", "fr", "jp", "us"], size=n_users).tolist(),
        }).write_csv(directory / "users.csv")
    path = directory / "dataset.yaml"
    path.write_text(DESCRIPTION.format(name=name, split=split))
    return path
