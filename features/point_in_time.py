"""Point-in-time training sets: each example gets the streaming features as they were just before it.

A training example at event time ``t`` (a rating, or a served exposure) may only
see streaming feature values computed from events strictly before ``t``; the
example's own event (which carries its label) and any later one must never
reach its features, or the model learns from the future and its offline AUC
lies. The join is a strict backward as-of join (polars ``join_asof``,
``allow_exact_matches=False``) of the examples against feature *history rows*
``(entity, event_timestamp, values)``, where a row stamped ``T`` summarises only
events with ``ts <= T``. Two sources of history rows exist:

* the stream processor's offline parquet parts (:func:`read_offline_parts`):
  one row per touched entity per micro-batch, stamped with the entity's latest
  event time (the processor's ``ref``), the same rows it pushed online;
* a replay of the interaction events through the processor's own incremental
  state (:func:`history_from_events`, ``streaming.features.UserPartial`` /
  ``merge_user``): one row per event, i.e. the processor with micro-batches of
  one event. Training on MovieLens replayed in time order uses this; it needs
  no broker.

Values are bucketized by the functions the gateway applies to the online read
(``streaming.features.bucketize_user`` / ``bucketize_item``), so a model sees
the same ids offline and online. An example with no earlier history gets
bucket 0 ("unknown") and no recent items, as a user unknown to the stream does
at serving time.

:func:`build_time_split` writes a features folder the trainer reads unchanged
(``interactions_{train,val,test}.parquet``, ``spec.json``, ``vocab.json``):
MovieLens-100K in time order, split by time (the first 80% of events train,
the next 10% validate, the last 10% test), vocabularies from the training
events only, with or without the streaming features.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Iterable

import polars as pl

from features.pipeline import (
    FEATURES,
    INTERACTION_COLUMNS,
    ITEMS_FILE,
    MULTI_VALUED,
    SPEC_FILE,
    USERS_FILE,
    VOCAB_FILE,
    _entity_tokens,
    _write_text,
    encode_columns,
    fit_vocabs,
    split_file,
    write_parquet,
)
from features.spec import FeatureSpec, SparseFeature
from features.splits import SPLIT_NAMES, split_sizes
from streaming.features import (
    DEFAULT_LAST_N,
    ITEM_BUCKETED,
    RECENT_ITEMS,
    USER_BUCKETED,
    ItemPartial,
    UserPartial,
    bucketize_item,
    bucketize_user,
    merge_item,
    merge_user,
    stream_sparse_features,
)

USER_VALUES = (*USER_BUCKETED, "last_item_ids")
ITEM_VALUES = tuple(ITEM_BUCKETED)
STAMP = "event_timestamp"
"""History rows: epoch milliseconds of the latest event the row summarises."""
EXAMPLE_TS = "ts_ms"
"""Examples: epoch milliseconds of the example's event."""
STREAM_COLUMNS = (*USER_BUCKETED.values(), RECENT_ITEMS, *ITEM_BUCKETED.values())


def history_from_events(events: pl.DataFrame, item_vocab: dict[str, int] | None,
                        last_n: int = DEFAULT_LAST_N) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Feature history rows of every user and item, one per event, through the processor's state code.

    ``events``: ``user``, ``item``, ``type`` (click/view/purchase), ``ts_ms``, in
    any order (they are applied in event-time order, file order breaking ties).
    Rows with the same (entity, stamp) are collapsed to the last one, which
    summarises every event at that instant.
    """
    ordered = events.with_row_index("_row").sort(["ts_ms", "_row"])
    users: dict[str, UserPartial] = {}
    items: dict[str, ItemPartial] = {}
    user_rows, item_rows = [], []
    for user, item, type_, ts in ordered.select("user", "item", "type", "ts_ms").iter_rows():
        up = users.setdefault(user, UserPartial())
        up.apply(ts, type_, item, last_n)
        values = merge_user([up], last_n, item_vocab)
        user_rows.append({"user": user, STAMP: up.ref, **{k: values[k] for k in USER_VALUES}})
        ip = items.setdefault(item, ItemPartial())
        ip.apply(ts, type_)
        ivalues = merge_item([ip])
        item_rows.append({"item": item, STAMP: ip.ref, **{k: ivalues[k] for k in ITEM_VALUES}})
    return _last_per_stamp(pl.DataFrame(user_rows, schema=_user_schema()), "user"), \
        _last_per_stamp(pl.DataFrame(item_rows, schema=_item_schema()), "item")


def _user_schema() -> dict:
    return {"user": pl.String, STAMP: pl.Int64, **{k: pl.Int64 for k in USER_BUCKETED},
            "last_item_ids": pl.List(pl.Int64)}


def _item_schema() -> dict:
    return {"item": pl.String, STAMP: pl.Int64, **{k: pl.Int64 for k in ITEM_VALUES}}


def _last_per_stamp(rows: pl.DataFrame, key: str) -> pl.DataFrame:
    return rows.unique(subset=[key, STAMP], keep="last", maintain_order=True).sort([key, STAMP])


def read_offline_parts(user_dir: Path, item_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """History rows from the stream processor's parquet parts (``features.feast_repo.stream_offline_dirs``).

    Parts are read in write order (modification time); for one (entity, stamp)
    the part written last wins, as it has seen the most events up to that stamp.
    """
    def scan(folder: Path, key: str, names: Iterable[str], schema: dict) -> pl.DataFrame:
        paths = sorted(Path(folder).glob("*.parquet"), key=lambda p: (p.stat().st_mtime_ns, p.name))
        if not paths:
            return pl.DataFrame(schema=schema)
        frames = [pl.read_parquet(p).select(key, STAMP, *names) for p in paths]
        frame = pl.concat(frames, how="vertical_relaxed").with_columns(
            pl.col(STAMP).cast(pl.Datetime("ms", "UTC")).dt.epoch("ms").alias(STAMP))
        return _last_per_stamp(frame.cast(schema), key)

    return (scan(user_dir, "user", USER_VALUES, _user_schema()),
            scan(item_dir, "item", ITEM_VALUES, _item_schema()))


def as_of_join(examples: pl.DataFrame, user_rows: pl.DataFrame, item_rows: pl.DataFrame) -> pl.DataFrame:
    """``examples`` (``user``, ``item``, ``ts_ms``) plus the model-ready streaming feature columns.

    Each example takes, per entity, the latest history row stamped strictly
    before its ``ts_ms`` (never at or after it); rows keep the examples' order.
    """
    for name in ("user", "item", EXAMPLE_TS):
        if name not in examples.columns:
            raise ValueError(f"examples need a {name!r} column; they have {examples.columns}")
    base = examples.with_row_index("_example").with_columns(pl.col(EXAMPLE_TS).cast(pl.Int64))
    keys = base.select("_example", "user", "item", EXAMPLE_TS).sort(EXAMPLE_TS)
    with warnings.catch_warnings():  # both sides are sorted on the time keys; polars cannot check it with `by`
        warnings.simplefilter("ignore", UserWarning)
        u = keys.join_asof(user_rows.rename({STAMP: "_user_stamp"}).sort("_user_stamp"), left_on=EXAMPLE_TS,
                           right_on="_user_stamp", by="user", strategy="backward", allow_exact_matches=False)
        both = u.join_asof(item_rows.rename({STAMP: "_item_stamp"}).sort("_item_stamp"), left_on=EXAMPLE_TS,
                           right_on="_item_stamp", by="item", strategy="backward", allow_exact_matches=False)
    both = both.sort("_example")
    user_vals = [bucketize_user(r) if r["_user_stamp"] is not None else bucketize_user({})
                 for r in both.select("_user_stamp", *USER_VALUES).iter_rows(named=True)]
    item_vals = [bucketize_item(r) if r["_item_stamp"] is not None else bucketize_item({})
                 for r in both.select("_item_stamp", *ITEM_VALUES).iter_rows(named=True)]
    columns = [pl.Series(name, [v[name] for v in user_vals], dtype=pl.Int64) for name in USER_BUCKETED.values()]
    columns.append(pl.Series(RECENT_ITEMS, [v[RECENT_ITEMS] for v in user_vals], dtype=pl.List(pl.Int64)))
    columns += [pl.Series(name, [v[name] for v in item_vals], dtype=pl.Int64) for name in ITEM_BUCKETED.values()]
    columns += [both.get_column("_user_stamp").alias("user_feature_ms"),
                both.get_column("_item_stamp").alias("item_feature_ms")]
    return base.drop("_example").with_columns(columns)


def movielens_events(inter: pl.DataFrame) -> pl.DataFrame:
    """Interactions as stream events, exactly as ``recast stream replay`` sends them (click = rating >= 4)."""
    return inter.select(
        pl.col("user"), pl.col("item"),
        pl.when(pl.col("rating") >= 4).then(pl.lit("click")).otherwise(pl.lit("view")).alias("type"),
        (pl.col("timestamp") * 1000).alias(EXAMPLE_TS),
    )


def time_split_codes(ts: pl.Series, fractions=(0.8, 0.1, 0.1)) -> pl.Series:
    """0/1/2 per row by event time: the first ``fractions[0]`` of events train, and so on (ties: file order)."""
    n_train, n_val, _ = split_sizes(len(ts), fractions)
    rank = ts.to_frame("t").with_row_index("_row").sort(["t", "_row"]).with_row_index("_rank")
    order = rank.sort("_row").get_column("_rank")
    return pl.Series("split", ((order >= n_train).cast(pl.Int8) + (order >= n_train + n_val).cast(pl.Int8)))


def build_time_split(raw_dir: Path, out: Path, stream: bool, fractions=(0.8, 0.1, 0.1),
                     genres_max_len: int = 6, last_n: int = DEFAULT_LAST_N) -> FeatureSpec:
    """A MovieLens features folder split by time, with (``stream=True``) or without the streaming features."""
    from features.movielens import load_interactions

    inter = load_interactions(Path(raw_dir)).collect()
    inter = inter.with_columns(time_split_codes(inter.get_column("timestamp"), fractions),
                               (pl.col("rating") >= 4).cast(pl.Int64).alias("label"))
    users, items = _entity_tokens(Path(raw_dir), inter)
    vocabs = fit_vocabs(inter.filter(pl.col("split") == 0), users, items)
    users_enc = encode_columns(users.lazy(), vocabs, genres_max_len).collect()
    items_enc = encode_columns(items.lazy(), vocabs, genres_max_len).collect()
    joined = (inter.with_row_index("_row").join(users_enc, on="user", how="left")
              .join(items_enc, on="item", how="left").sort("_row"))
    columns = list(INTERACTION_COLUMNS)
    sparse = [SparseFeature(name, len(vocabs[name]) + 1, entity, genres_max_len if name in MULTI_VALUED else 1)
              for name, entity in FEATURES]
    if stream:
        events = movielens_events(inter)
        user_rows, item_rows = history_from_events(events, vocabs["item_id"], last_n)
        joined = as_of_join(joined.with_columns(events.get_column(EXAMPLE_TS)), user_rows, item_rows)
        columns += list(STREAM_COLUMNS)
        sparse += stream_sparse_features(len(vocabs["item_id"]) + 1, last_n)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for code, split in enumerate(SPLIT_NAMES):
        part = joined.filter(pl.col("split") == code).select(columns)
        rows[split] = part.height
        write_parquet(part, out / split_file(split))
    write_parquet(users_enc, out / USERS_FILE)
    write_parquet(items_enc, out / ITEMS_FILE)
    _write_text(out / VOCAB_FILE, json.dumps(vocabs, indent=1))
    spec = FeatureSpec(sparse=tuple(sparse), meta={
        "dataset": "ml-100k", "label_rule": "rating >= 4", "rows": rows, "stream_features": stream,
        "split": {"kind": "time", "fractions": list(fractions)},
        "positive_rate": {s: float(joined.filter(pl.col("split") == c).get_column("label").mean() or 0.0)
                          for c, s in enumerate(SPLIT_NAMES)},
    })
    spec.save(out / SPEC_FILE)
    return spec


def assemble(examples: pl.DataFrame, features_dir: Path, names: Iterable[str],
             history: tuple[pl.DataFrame, pl.DataFrame] | None = None) -> pl.DataFrame:
    """``examples`` (``user``, ``item``, ``ts_ms``, ...) with the feature columns ``names``, as training sees them.

    Static features come from the offline store at ``features_dir`` (its
    encoded ``users``/``items`` tables: unknown entities get 0 / ``[]``, as at
    serving time), streaming ones from ``history`` as of strictly before each
    example. The same function builds training sets and the training side of
    the training-serving consistency check.
    """
    names = list(names)
    users = pl.read_parquet(Path(features_dir) / USERS_FILE).drop(STAMP, strict=False)
    items = pl.read_parquet(Path(features_dir) / ITEMS_FILE).drop(STAMP, strict=False)
    frame = (examples.with_columns(pl.col(EXAMPLE_TS).cast(pl.Int64)).with_row_index("_row")
             .join(users, on="user", how="left").join(items, on="item", how="left").sort("_row").drop("_row"))
    static = [n for n in names if n not in STREAM_COLUMNS]
    missing = [n for n in static if n not in frame.columns]
    if missing:
        raise ValueError(f"the offline store at {features_dir} has no feature(s) {missing}")
    frame = frame.with_columns(
        [pl.col(n).fill_null(pl.lit([], dtype=pl.List(pl.Int64))) if frame.schema[n] == pl.List(pl.Int64)
         else pl.col(n).fill_null(0) for n in static])
    if any(n in STREAM_COLUMNS for n in names):
        if history is None:
            raise ValueError("streaming features need the feature history rows")
        frame = as_of_join(frame, *history)
    return frame


def build_training_set(examples: pl.DataFrame, features_dir: Path, spec: FeatureSpec, out: Path,
                       history: tuple[pl.DataFrame, pl.DataFrame] | None = None,
                       fractions=(0.8, 0.1, 0.1)) -> dict[str, int]:
    """A features folder for ``spec`` from labelled examples (``user``, ``item``, ``ts_ms``, ``label``),
    split by time (:func:`assemble` gives the features); returns rows per split."""
    frame = assemble(examples.select("user", "item", EXAMPLE_TS, pl.col("label").cast(pl.Int64)), features_dir,
                     spec.names, history)
    frame = frame.with_columns(time_split_codes(frame.get_column(EXAMPLE_TS), fractions),
                               (pl.col(EXAMPLE_TS) // 1000).alias("timestamp"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for code, split in enumerate(SPLIT_NAMES):
        part = frame.filter(pl.col("split") == code).select("user", "item", "timestamp", "label", *spec.names)
        rows[split] = part.height
        write_parquet(part, out / split_file(split))
    FeatureSpec(spec.sparse, spec.dense, spec.label, {**spec.meta, "rows": rows,
                                                      "split": {"kind": "time", "fractions": list(fractions)}}
                ).save(out / SPEC_FILE)
    return rows
