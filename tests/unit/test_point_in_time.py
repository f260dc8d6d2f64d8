"""Point-in-time training sets: no example ever sees a feature value from its own instant or later."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import polars as pl
import pytest

from features.movielens import generate_movielens_sample, load_interactions
from features.point_in_time import (
    STREAM_COLUMNS,
    as_of_join,
    build_time_split,
    history_from_events,
    movielens_events,
    read_offline_parts,
    time_split_codes,
)
from features.spec import FeatureSpec
from streaming.features import RECENT_ITEMS, bucketize_item, bucketize_user, recompute

H = 3_600_000
VOCAB = {str(i): i for i in range(1, 50)}


def _events(rows):
    return pl.DataFrame(rows, schema={"user": pl.String, "item": pl.String, "type": pl.String, "ts_ms": pl.Int64},
                        orient="row")


def _features(events: pl.DataFrame, examples: pl.DataFrame) -> pl.DataFrame:
    users, items = history_from_events(events, VOCAB)
    return as_of_join(examples, users, items).select(*STREAM_COLUMNS)


BASE = [("u1", "1", "click", 1 * H), ("u1", "2", "view", 2 * H), ("u2", "1", "click", 2 * H),
        ("u1", "3", "click", 3 * H), ("u2", "3", "view", 5 * H)]
EXAMPLES = _events([("u1", "4", "click", 3 * H), ("u1", "1", "view", 4 * H), ("u2", "1", "click", 5 * H),
                    ("u3", "1", "view", 6 * H)]).drop("type")


def test_features_count_only_strictly_earlier_events():
    out = _features(_events(BASE), EXAMPLES).to_dicts()
    # u1 at 3h: events at 1h (click) and 2h; the click at exactly 3h is the example's own instant
    assert out[0]["clicks_24h_bucket"] == bucketize_user({"clicks_24h": 1})["clicks_24h_bucket"]
    assert out[0]["events_24h_bucket"] == bucketize_user({"events_24h": 2})["events_24h_bucket"]
    assert out[0][RECENT_ITEMS] == [2, 1]
    # u1 at 4h sees the 3h click too
    assert out[1][RECENT_ITEMS] == [3, 2, 1]
    assert out[1]["item_clicks_total_bucket"] == bucketize_item({"item_clicks_total": 2})["item_clicks_total_bucket"]
    # u3 never seen before: unknown, as at serving time
    assert out[3]["clicks_24h_bucket"] == 0 and out[3][RECENT_ITEMS] == []


@pytest.mark.parametrize("future_ts", [3 * H, 3 * H + 1, 10 * H])
def test_an_adversarial_future_event_changes_no_earlier_example(future_ts):
    """Leakage test: a burst of clicks at or after an example's instant must not reach that example."""
    before = _features(_events(BASE), EXAMPLES)
    burst = [("u1", "4", "click", future_ts)] * 40 + [("u2", "1", "purchase", future_ts)] * 40
    after = _features(_events(BASE + burst), EXAMPLES)
    unaffected = (EXAMPLES.get_column("ts_ms") <= future_ts).to_list()
    for k, same in enumerate(unaffected):
        if same:
            assert after.row(k) == before.row(k), f"example {k} at {EXAMPLES['ts_ms'][k]} saw an event at {future_ts}"
    assert unaffected[0]  # the test would be empty otherwise


def test_offline_parts_rows_stamped_at_or_after_the_example_are_not_used(tmp_path):
    """The processor's parquet parts as the sink writes them (UTC event_timestamp, one row per micro-batch)."""
    user_dir, item_dir = tmp_path / "user", tmp_path / "item"
    user_dir.mkdir()
    item_dir.mkdir()

    def part(folder, name, rows):
        frame = pd.DataFrame(rows)
        frame["event_timestamp"] = pd.to_datetime(frame.pop("ms"), unit="ms", utc=True)
        frame.to_parquet(folder / name)

    user = {"clicks_1h": 0, "clicks_24h": 0, "events_24h": 0, "purchases_24h": 0, "last_items": [],
            "last_item_ids": [], "last_event_ms": 0}
    part(user_dir, "a.parquet", [{**user, "user": "u1", "ms": 1 * H, "clicks_24h": 1, "last_item_ids": [1]}])
    part(user_dir, "b.parquet", [{**user, "user": "u1", "ms": 3 * H, "clicks_24h": 9, "last_item_ids": [7, 1]}])
    part(item_dir, "a.parquet", [{"item": "4", "ms": 3 * H, "item_clicks_1h": 5, "item_clicks_24h": 5,
                                  "item_events_24h": 5, "item_clicks_total": 5, "item_last_event_ms": 3 * H}])
    users, items = read_offline_parts(user_dir, item_dir)
    out = as_of_join(EXAMPLES.head(2), users, items)
    first, second = out.to_dicts()
    assert first[RECENT_ITEMS] == [1] and first["user_feature_ms"] == 1 * H  # the 3h row is the example's instant
    assert first["item_clicks_total_bucket"] == 0
    assert second[RECENT_ITEMS] == [7, 1] and second["user_feature_ms"] == 3 * H


def test_time_split_puts_the_past_in_train_and_the_future_in_test():
    ts = pl.Series([5, 1, 3, 2, 4, 9, 8, 7, 6, 10])
    codes = time_split_codes(ts).to_list()
    by_code = {c: [t for t, k in zip(ts.to_list(), codes) if k == c] for c in (0, 1, 2)}
    assert max(by_code[0]) < min(by_code[1]) <= max(by_code[1]) < min(by_code[2])
    assert [len(by_code[c]) for c in (0, 1, 2)] == [8, 1, 1]


def test_built_training_set_equals_a_from_scratch_recompute_over_strictly_earlier_events(tmp_path):
    """The production builder against streaming.features.recompute (no shared code) on a sample of examples."""
    raw = generate_movielens_sample(tmp_path / "raw", n_users=12, n_items=10, n_interactions=300, seed=3)
    spec = build_time_split(raw, tmp_path / "features", stream=True)
    assert set(STREAM_COLUMNS) <= set(spec.names)
    assert FeatureSpec.load(tmp_path / "features" / "spec.json").names == spec.names
    vocab = json.loads((tmp_path / "features" / "vocab.json").read_text())["item_id"]
    events = movielens_events(load_interactions(raw).collect())
    frames = [pl.read_parquet(tmp_path / "features" / f"interactions_{s}.parquet") for s in ("train", "val", "test")]
    assert max(frames[0]["timestamp"]) <= min(frames[1]["timestamp"]) <= max(frames[1]["timestamp"]) <= min(frames[2]["timestamp"])
    rows = pl.concat(frames).to_dicts()
    rng = np.random.default_rng(0)
    for k in rng.choice(len(rows), size=40, replace=False):
        row = rows[int(k)]
        past = events.filter(pl.col("ts_ms") < row["timestamp"] * 1000)
        users, items = recompute(past, item_vocab=vocab)
        u = users.filter(pl.col("user") == row["user"]).to_dicts()
        i = items.filter(pl.col("item") == row["item"]).to_dicts()
        want = {**bucketize_user(u[0] if u else {}), **bucketize_item(i[0] if i else {})}
        got = {name: row[name] for name in want}
        assert got == want, f"example {row['user']}/{row['item']} at {row['timestamp']}"


def test_examples_without_time_are_refused():
    with pytest.raises(ValueError, match="ts_ms"):
        as_of_join(pl.DataFrame({"user": ["u1"], "item": ["1"]}), *history_from_events(_events(BASE), VOCAB))
