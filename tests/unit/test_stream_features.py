"""Streaming feature semantics: the incremental partials equal the from-scratch polars recomputation,
whatever the arrival order and however the events are split over partitions."""

from __future__ import annotations

import random

import pytest

from streaming.events import InteractionV1
from streaming.features import (
    COUNT_BUCKETS,
    DAY_MS,
    HOUR_MS,
    ItemPartial,
    UserPartial,
    bucketize_item,
    bucketize_user,
    count_bucket,
    merge_item,
    merge_user,
    recompute,
    stream_sparse_features,
    uses_stream_features,
)

VOCAB = {str(i): i for i in range(1, 15)}  # items 15.. are unknown to the "training vocabulary"


def random_events(n: int, seed: int) -> list[InteractionV1]:
    rng = random.Random(seed)
    out = []
    for k in range(n):
        t = rng.choice(["view", "click", "click", "purchase"])
        ts = 1_000_000_000_000 + rng.randint(0, 3 * DAY_MS) + rng.choice([0, 0, HOUR_MS, DAY_MS])
        out.append(InteractionV1(event_id=f"e{k}", ts_ms=ts, type=t, user=str(rng.randint(1, 8)),
                                 item=str(rng.randint(1, 20)),
                                 **({"price": 3.0, "currency": "EUR"} if t == "purchase" else {})))
    # exact window edges and same-second ties
    base = out[0]
    out.append(base.model_copy(update={"event_id": "edge1", "ts_ms": base.ts_ms - HOUR_MS}))
    out.append(base.model_copy(update={"event_id": "edge2", "ts_ms": base.ts_ms - DAY_MS}))
    out.append(base.model_copy(update={"event_id": "tie", "item": "3"}))
    return out


def incremental(events, partitions: int, last_n: int = 10):
    users: dict[str, dict[int, UserPartial]] = {}
    items: dict[str, dict[int, ItemPartial]] = {}
    for k, e in enumerate(events):
        part = (hash(e.user) + k) % partitions  # deliberately NOT keyed by user
        users.setdefault(e.user, {}).setdefault(part, UserPartial()).apply(e.ts_ms, e.type, e.item, last_n)
        items.setdefault(e.item, {}).setdefault(part, ItemPartial()).apply(e.ts_ms, e.type)
    # round-trip through the stored form, as the state store does
    users = {u: {p: UserPartial.loads(s.dumps()) for p, s in ps.items()} for u, ps in users.items()}
    items = {i: {p: ItemPartial.loads(s.dumps()) for p, s in ps.items()} for i, ps in items.items()}
    return ({u: merge_user(list(ps.values()), last_n, VOCAB) for u, ps in users.items()},
            {i: merge_item(list(ps.values())) for i, ps in items.items()})


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("partitions", [1, 3])
def test_incremental_equals_recomputation_in_any_order(seed: int, partitions: int) -> None:
    events = random_events(400, seed)
    users, items = recompute(events, 10, VOCAB)
    shuffled = list(events)
    random.Random(seed + 100).shuffle(shuffled)
    got_users, got_items = incremental(shuffled, partitions)
    assert sorted(got_users) == users["user"].to_list()
    for row in users.iter_rows(named=True):
        assert got_users[row["user"]] == {k: v for k, v in row.items() if k != "user"}, row["user"]
    for row in items.iter_rows(named=True):
        assert got_items[row["item"]] == {k: v for k, v in row.items() if k != "item"}, row["item"]


def test_windows_are_event_time_and_anchored_at_the_latest_event() -> None:
    p = UserPartial()
    t = 10 * DAY_MS
    for ts, kind, item in [(t - DAY_MS, "click", "1"), (t - DAY_MS + 1, "click", "2"), (t - HOUR_MS, "click", "3"),
                           (t - HOUR_MS + 1, "view", "4"), (t, "click", "5"), (t - 2 * DAY_MS, "click", "old")]:
        p.apply(ts, kind, item, 3)
    v = merge_user([p], 3, VOCAB)
    assert (v["clicks_1h"], v["clicks_24h"], v["events_24h"]) == (1, 3, 4)
    assert v["last_items"] == ["5", "4", "3"] and v["last_item_ids"] == [5, 4, 3]
    assert v["last_event_ms"] == t


def test_count_buckets() -> None:
    assert [count_bucket(n) for n in (None, 0, 1, 2, 3, 4, 7, 8, 31, 32, 10**6)] == [0, 1, 2, 3, 3, 4, 4, 5, 6, 7, 7]
    assert max(count_bucket(n) for n in range(10_000)) == COUNT_BUCKETS - 1
    assert bucketize_user({}) == {"clicks_1h_bucket": 0, "clicks_24h_bucket": 0, "events_24h_bucket": 0,
                                  "purchases_24h_bucket": 0, "recent_items": []}
    assert bucketize_item({"item_clicks_1h": 0, "item_clicks_24h": 5, "item_clicks_total": 40}) == {
        "item_clicks_1h_bucket": 1, "item_clicks_24h_bucket": 4, "item_clicks_total_bucket": 7}


def test_sparse_features_for_future_trainings() -> None:
    feats = stream_sparse_features(item_vocab_size=100)
    names = {f.name: f for f in feats}
    assert names["recent_items"].max_len == 10 and names["recent_items"].vocab_size == 100
    assert names["clicks_1h_bucket"].entity == "user" and names["item_clicks_24h_bucket"].entity == "item"
    assert all(f.vocab_size == COUNT_BUCKETS for f in feats if f.name != "recent_items")


def test_uses_stream_features() -> None:
    from features.spec import FeatureSpec, SparseFeature

    static = FeatureSpec(sparse=(SparseFeature("user_id", 10, "user"),))
    fresh = FeatureSpec(sparse=(SparseFeature("user_id", 10, "user"), SparseFeature("clicks_1h_bucket", 8, "user")))
    assert not uses_stream_features([static])
    assert uses_stream_features([static, fresh])


def test_one_partial_takes_the_unmerged_path_with_the_merged_values() -> None:
    import random

    from streaming.features import UserPartial, merge_user

    rng = random.Random(3)
    for _ in range(200):
        p = UserPartial()
        for _ in range(rng.randrange(1, 30)):
            p.apply(1_700_000_000_000 + rng.randrange(0, 3 * 86_400_000), rng.choice(["view", "click", "purchase"]),
                    str(rng.randrange(20)), 5)
        vocab = {str(i): i + 1 for i in range(0, 20, 2)}
        # an empty second partial changes nothing but takes the general merge
        assert merge_user([p], 5, vocab) == merge_user([p, UserPartial()], 5, vocab)
