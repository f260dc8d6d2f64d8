"""The streaming features: their exact meaning, incremental state, and a from-scratch reference.

Windows are in **event time**, anchored at the entity's latest event (``ref``,
the largest ``ts_ms`` seen for that user or item): ``clicks_1h`` counts the
user's clicks with ``ref - 1h < ts <= ref``. So a feature is a pure function of
the *set* of events, whatever their arrival order, partitioning or replays, and
the online value is "as of the entity's last event" (it does not decay with the
wall clock while the entity is silent; the serving model sees
``last_event_ms`` if it needs the age).

User features (``user_stream_features``): ``clicks_1h``, ``clicks_24h`` (type
click), ``events_24h`` (all types), ``purchases_24h``, ``last_items`` (the
``last_n`` most recent items, newest first, ties broken by item id, raw ids),
``last_item_ids`` (the same, vocabulary-encoded with the training ``item_id``
vocabulary, unknown items dropped), ``last_event_ms``.

Item features (``item_stream_features``): ``item_clicks_1h``,
``item_clicks_24h``, ``item_events_24h``, ``item_clicks_total`` (all time),
``item_last_event_ms``.

State is kept per (entity, partition) as a *partial* that can be merged with
the partials of other partitions (max of refs, window counts re-evaluated at
the merged ref, totals summed, last-N merged). Pruning a partial at its own
ref never drops an event the merged window could still count, because the
merged ref is at least as large. This makes the item popularity exact when
two processor instances each own some partitions.

How they reach the model: :func:`stream_sparse_features` lists them as
bucketized sparse features (log2 count buckets, see :func:`count_bucket`;
``recent_items`` multi-valued over the item vocabulary) for the next
trainings to append to their FeatureSpec; the gateway already reads them
(``features.online.OnlineFeatureReader(..., stream=True)``) and
``serving.scoring.build_inputs`` feeds any user/item feature the model's spec
names. Models trained on static features only ignore them.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import orjson

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
DEFAULT_LAST_N = 10
COUNT_BUCKETS = 8
"""Bucket ids: 0 unknown (no stream data), 1 -> count 0, 2 -> 1, 3 -> 2-3, 4 -> 4-7, 5 -> 8-15, 6 -> 16-31, 7 -> 32+."""


def count_bucket(n: int | None) -> int:
    """Log2 bucket id of a count (0 is reserved for "unknown", like every sparse feature)."""
    if n is None or n < 0:
        return 0
    if n == 0:
        return 1
    return min(2 + (int(n).bit_length() - 1), COUNT_BUCKETS - 1)


USER_BUCKETED = {"clicks_1h": "clicks_1h_bucket", "clicks_24h": "clicks_24h_bucket",
                 "events_24h": "events_24h_bucket", "purchases_24h": "purchases_24h_bucket"}
ITEM_BUCKETED = {"item_clicks_1h": "item_clicks_1h_bucket", "item_clicks_24h": "item_clicks_24h_bucket",
                 "item_clicks_total": "item_clicks_total_bucket"}
RECENT_ITEMS = "recent_items"
"""Sparse feature name of ``last_item_ids`` in a model spec."""


STREAM_SPARSE_NAMES = frozenset([*USER_BUCKETED.values(), *ITEM_BUCKETED.values(), RECENT_ITEMS])


def uses_stream_features(specs) -> bool:
    """Whether any of these FeatureSpecs names a streaming feature."""
    return any(f.name in STREAM_SPARSE_NAMES for spec in specs for f in spec.sparse)


def stream_sparse_features(item_vocab_size: int, last_n: int = DEFAULT_LAST_N) -> list:
    """SparseFeature entries a training appends to its spec to use the streaming features."""
    from features.spec import SparseFeature

    out = [SparseFeature(name, COUNT_BUCKETS, "user") for name in USER_BUCKETED.values()]
    out.append(SparseFeature(RECENT_ITEMS, item_vocab_size, "user", max_len=last_n))
    out += [SparseFeature(name, COUNT_BUCKETS, "item") for name in ITEM_BUCKETED.values()]
    return out


def _in(ts: list[int], lo: int) -> int:
    """How many of the sorted times ``ts`` are > lo."""
    return len(ts) - bisect_right(ts, lo)


def _prune(ts: list[int], lo: int) -> None:
    """Drop the sorted times <= lo (in place)."""
    cut = bisect_right(ts, lo)
    if cut:
        del ts[:cut]


def _add(ts: list[int], t: int) -> None:
    if not ts or t >= ts[-1]:
        ts.append(t)  # the common case: events arrive in event-time order
    else:
        insort(ts, t)


@dataclass
class UserPartial:
    """One partition's share of a user's events (see the module docstring)."""

    ref: int = 0
    clicks: list[int] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    purchases: list[int] = field(default_factory=list)
    """Sorted event times within 24 h of ``ref``."""
    last: list[tuple[int, str]] = field(default_factory=list)
    """(ts, item), newest first, at most last_n."""

    def apply(self, ts: int, type_: str, item: str, last_n: int) -> None:
        if ts > self.ref:
            self.ref = ts
            lo = ts - DAY_MS
            _prune(self.clicks, lo)
            _prune(self.events, lo)
            _prune(self.purchases, lo)
        if ts > self.ref - DAY_MS:
            _add(self.events, ts)
            if type_ == "click":
                _add(self.clicks, ts)
            elif type_ == "purchase":
                _add(self.purchases, ts)
        pair = (ts, item)
        last = self.last
        if last and pair >= last[0] and len(last) <= last_n:  # the newest (the common case): no sort
            self.last = [pair, *last[:last_n - 1]]
        elif len(last) < last_n or pair > last[-1]:
            self.last = _top_n([*last, pair], last_n)

    def dumps(self) -> str:
        return orjson.dumps([self.ref, self.clicks, self.events, self.purchases, self.last]).decode()

    @classmethod
    def loads(cls, text: str | bytes) -> "UserPartial":
        ref, clicks, events, purchases, last = orjson.loads(text)
        return cls(ref, clicks, events, purchases, [(int(t), str(i)) for t, i in last])


@dataclass
class ItemPartial:
    ref: int = 0
    clicks: list[int] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    clicks_total: int = 0

    def apply(self, ts: int, type_: str) -> None:
        if ts > self.ref:
            self.ref = ts
            lo = ts - DAY_MS
            _prune(self.clicks, lo)
            _prune(self.events, lo)
        if type_ == "click":
            self.clicks_total += 1
        if ts > self.ref - DAY_MS:
            _add(self.events, ts)
            if type_ == "click":
                _add(self.clicks, ts)

    def dumps(self) -> str:
        return orjson.dumps([self.ref, self.clicks, self.events, self.clicks_total]).decode()

    @classmethod
    def loads(cls, text: str | bytes) -> "ItemPartial":
        ref, clicks, events, total = orjson.loads(text)
        return cls(ref, clicks, events, total)


def _top_n(pairs: Iterable[tuple[int, str]], n: int) -> list[tuple[int, str]]:
    return sorted(pairs, reverse=True)[:n]


def merge_user(partials: Sequence[UserPartial], last_n: int, item_vocab: dict[str, int] | None = None) -> dict:
    """Feature values of a user from the partials of every partition."""
    if len(partials) == 1:  # the common case (events keyed by user): no merge
        p = partials[0]
        ref, h, d = p.ref, p.ref - HOUR_MS, p.ref - DAY_MS
        items = [i for _, i in p.last[:last_n]]
        return {"clicks_1h": _in(p.clicks, h), "clicks_24h": _in(p.clicks, d), "events_24h": _in(p.events, d),
                "purchases_24h": _in(p.purchases, d), "last_items": items,
                "last_item_ids": encode_items(items, item_vocab), "last_event_ms": ref}
    ref = max(p.ref for p in partials)
    h, d = ref - HOUR_MS, ref - DAY_MS
    last = _top_n((pair for p in partials for pair in p.last), last_n)
    items = [i for _, i in last]
    return {
        "clicks_1h": sum(_in(p.clicks, h) for p in partials),
        "clicks_24h": sum(_in(p.clicks, d) for p in partials),
        "events_24h": sum(_in(p.events, d) for p in partials),
        "purchases_24h": sum(_in(p.purchases, d) for p in partials),
        "last_items": items,
        "last_item_ids": encode_items(items, item_vocab),
        "last_event_ms": ref,
    }


def merge_item(partials: Sequence[ItemPartial]) -> dict:
    ref = max(p.ref for p in partials)
    h, d = ref - HOUR_MS, ref - DAY_MS
    clicks_1h = clicks_24h = events_24h = total = 0
    for p in partials:
        clicks_1h += _in(p.clicks, h)
        clicks_24h += _in(p.clicks, d)
        events_24h += _in(p.events, d)
        total += p.clicks_total
    return {"item_clicks_1h": clicks_1h, "item_clicks_24h": clicks_24h, "item_events_24h": events_24h,
            "item_clicks_total": total, "item_last_event_ms": ref}


def encode_items(items: Sequence[str], item_vocab: dict[str, int] | None) -> list[int]:
    """Item ids through the training vocabulary; unknown items are dropped (as the pipeline does)."""
    if not item_vocab:
        return []
    return [item_vocab[i] for i in items if i in item_vocab]


def bucketize_user(values: dict) -> dict:
    """Model-ready ids of a user's stream values (``None`` values -> bucket 0 = unknown)."""
    out = {bucket: count_bucket(values.get(raw)) for raw, bucket in USER_BUCKETED.items()}
    out[RECENT_ITEMS] = list(values.get("last_item_ids") or [])
    return out


def bucketize_item(values: dict) -> dict:
    return {bucket: count_bucket(values.get(raw)) for raw, bucket in ITEM_BUCKETED.items()}


# --------------------------------------------------------------------------- reference


def recompute(events, last_n: int = DEFAULT_LAST_N, item_vocab: dict[str, int] | None = None):
    """From-scratch feature values over a set of interaction events (polars, no state).

    ``events``: a polars DataFrame with ``user``, ``item``, ``type``, ``ts_ms``
    (or an iterable of InteractionV1). Returns ``(users, items)`` DataFrames
    with the columns the processor pushes. The reliability tests compare the
    online store against this; it shares no code with the incremental path.
    """
    import polars as pl

    if not isinstance(events, pl.DataFrame):
        rows = [{"user": e.user, "item": e.item, "type": e.type, "ts_ms": e.ts_ms} for e in events]
        events = pl.DataFrame(rows, schema={"user": pl.String, "item": pl.String, "type": pl.String, "ts_ms": pl.Int64})
    ref_u = pl.col("ts_ms").max().over("user")
    click = pl.col("type") == "click"
    users = (
        events.with_columns(ref_u.alias("ref"))
        .group_by("user")
        .agg(
            (click & (pl.col("ts_ms") > pl.col("ref") - HOUR_MS)).sum().alias("clicks_1h"),
            (click & (pl.col("ts_ms") > pl.col("ref") - DAY_MS)).sum().alias("clicks_24h"),
            (pl.col("ts_ms") > pl.col("ref") - DAY_MS).sum().alias("events_24h"),
            ((pl.col("type") == "purchase") & (pl.col("ts_ms") > pl.col("ref") - DAY_MS)).sum().alias("purchases_24h"),
            pl.col("item").sort_by(["ts_ms", "item"], descending=[True, True]).head(last_n).alias("last_items"),
            pl.col("ts_ms").max().alias("last_event_ms"),
        )
        .with_columns(pl.col(c).cast(pl.Int64) for c in ("clicks_1h", "clicks_24h", "events_24h", "purchases_24h"))
        .sort("user")
    )
    users = users.with_columns(
        pl.Series("last_item_ids", [encode_items(x, item_vocab) for x in users["last_items"].to_list()],
                  dtype=pl.List(pl.Int64))
    )
    ref_i = pl.col("ts_ms").max().over("item")
    items = (
        events.with_columns(ref_i.alias("ref"))
        .group_by("item")
        .agg(
            (click & (pl.col("ts_ms") > pl.col("ref") - HOUR_MS)).sum().alias("item_clicks_1h"),
            (click & (pl.col("ts_ms") > pl.col("ref") - DAY_MS)).sum().alias("item_clicks_24h"),
            (pl.col("ts_ms") > pl.col("ref") - DAY_MS).sum().alias("item_events_24h"),
            click.sum().alias("item_clicks_total"),
            pl.col("ts_ms").max().alias("item_last_event_ms"),
        )
        .with_columns(pl.col(c).cast(pl.Int64) for c in ("item_clicks_1h", "item_clicks_24h", "item_events_24h",
                                                          "item_clicks_total"))
        .sort("item")
    )
    return users, items
