"""MovieLens-100K CTR features, written as the parquet offline store.

Outputs under ``settings.data.features_dir`` (all ids encoded with
``features.spec`` rules: 0 = unknown/OOV, 1..n known tokens):

* ``interactions_{train,val,test}.parquet``: ``user``, ``item`` (raw ids),
  ``timestamp`` (int s), ``label`` (rating >= 4), then every sparse feature.
* ``users.parquet`` / ``items.parquet``: one row per entity (all of the raw
  files), encoded, with a UTC ``event_timestamp``: the Feast sources.
* ``vocab.json`` (``{feature: {token: id}}``), ``spec.json`` (FeatureSpec),
  ``manifest.json`` (input checksums + parameters; makes re-runs no-ops).

Vocabularies come from the train split only, so val/test see cold-start
users/items and unseen categories exactly as serving does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from features.movielens import (
    DATASET,
    RAW_FILES,
    fetch_movielens,
    load_interactions,
    load_items,
    load_users,
    sha256_file,
)
from features.spec import Entity, FeatureSpec, SparseFeature
from features.splits import SPLIT_NAMES, random_split
from recast.settings import Settings

PIPELINE_VERSION = 1
ZIP_PREFIX_LEN = 2
"""First two zip digits: ~110 regions in ML-100K (three digits give ~380, nearly one per user)."""
AGE_BUCKETS: tuple[tuple[int, str], ...] = (
    (18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (50, "45-49"), (56, "50-55"),
)
AGE_TOP = "56+"
"""The MovieLens-1M age groups: upper bound (exclusive) and label."""

FEATURES: tuple[tuple[str, Entity], ...] = (
    ("user_id", "user"), ("item_id", "item"), ("age", "user"), ("gender", "user"),
    ("occupation", "user"), ("zip_prefix", "user"), ("release_year", "item"), ("genres", "item"),
)
FEATURE_NAMES = tuple(name for name, _ in FEATURES)
USER_FEATURES = tuple(name for name, entity in FEATURES if entity == "user")
ITEM_FEATURES = tuple(name for name, entity in FEATURES if entity == "item")
MULTI_VALUED = ("genres",)

USERS_FILE = "users.parquet"
ITEMS_FILE = "items.parquet"
VOCAB_FILE = "vocab.json"
SPEC_FILE = "spec.json"
MANIFEST_FILE = "manifest.json"
INTERACTION_COLUMNS = ("user", "item", "timestamp", "label", *FEATURE_NAMES)


def split_file(split: str) -> str:
    if split not in SPLIT_NAMES:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLIT_NAMES}")
    return f"interactions_{split}.parquet"


OUTPUT_FILES = (*(split_file(s) for s in SPLIT_NAMES), USERS_FILE, ITEMS_FILE, VOCAB_FILE, SPEC_FILE)


@dataclass(frozen=True)
class FeatureBuild:
    features_dir: Path
    spec: FeatureSpec
    skipped: bool
    """True when outputs were already up to date and nothing was rewritten."""

    def path(self, name: str) -> Path:
        return self.features_dir / name


# --------------------------------------------------------------------------- tokens


def age_bucket(age: int | None) -> str | None:
    """Age group label of a raw age (None stays unknown)."""
    if age is None:
        return None
    for upper, label in AGE_BUCKETS:
        if age < upper:
            return label
    return AGE_TOP


def _age_bucket_expr(col: pl.Expr) -> pl.Expr:
    upper, label = AGE_BUCKETS[0]
    expr = pl.when(col.is_null()).then(pl.lit(None, pl.String)).when(col < upper).then(pl.lit(label))
    for upper, label in AGE_BUCKETS[1:]:
        expr = expr.when(col < upper).then(pl.lit(label))
    return expr.otherwise(pl.lit(AGE_TOP))


def user_tokens(users: pl.LazyFrame) -> pl.LazyFrame:
    """Raw user attributes as string tokens, one column per user feature (null = unknown)."""
    return users.select(
        pl.col("user"),
        pl.col("user").alias("user_id"),
        _age_bucket_expr(pl.col("age")).alias("age"),
        pl.col("gender"),
        pl.col("occupation"),
        pl.col("zip_code").str.strip_chars().str.slice(0, ZIP_PREFIX_LEN).alias("zip_prefix"),
    )


def item_tokens(items: pl.LazyFrame) -> pl.LazyFrame:
    """Raw item attributes as tokens: year as a string (null when unknown), genres as a list."""
    return items.select(
        pl.col("item"),
        pl.col("item").alias("item_id"),
        pl.col("release_year").cast(pl.String).alias("release_year"),
        pl.col("genres"),
    )


def token_sort_key(token: str) -> tuple[int, int, str]:
    """Numeric tokens first in numeric order, then the rest lexicographically."""
    if token.isascii() and token.isdigit():
        return (0, int(token), token)
    return (1, 0, token)


def build_vocab(tokens: Iterable[str | None]) -> dict[str, int]:
    """``{token: id}`` with ids 1..n in ``token_sort_key`` order; 0 stays for unknown."""
    unique = {t for t in tokens if t is not None and t != ""}
    return {t: i for i, t in enumerate(sorted(unique, key=token_sort_key), start=1)}


def fit_vocabs(train: pl.DataFrame, users: pl.DataFrame, items: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Vocabularies over the users/items that occur in ``train`` interactions only."""
    train_users = users.join(train.select("user").unique(), on="user", how="semi")
    train_items = items.join(train.select("item").unique(), on="item", how="semi")
    vocabs: dict[str, dict[str, int]] = {}
    for name, entity in FEATURES:
        frame = train_users if entity == "user" else train_items
        col = frame.get_column(name)
        if name in MULTI_VALUED:
            col = col.explode()
        vocabs[name] = build_vocab(col.to_list())
    return vocabs


def encode_columns(lf: pl.LazyFrame, vocabs: dict[str, dict[str, int]], max_len: int | dict[str, int],
                   multi_valued: Iterable[str] = MULTI_VALUED) -> pl.LazyFrame:
    """Replace token columns that have a vocabulary by Int64 ids (lists for ``multi_valued``).

    Unknown or null tokens become 0; in lists they are dropped, and lists are cut
    to ``max_len`` (one number, or one per feature; first values kept) but never
    padded: padding is the model input's job.
    """
    multi_valued = set(multi_valued)
    names = set(lf.collect_schema().names())
    exprs = []
    for name, vocab in vocabs.items():
        if name not in names:
            continue
        if name in multi_valued:
            cut = max_len if isinstance(max_len, int) else max_len[name]
            encoded = (
                pl.col(name)
                .list.eval(_lookup(pl.element(), vocab))
                .list.eval(pl.element().filter(pl.element() != 0))
                .list.head(cut)
                .fill_null(pl.lit([], dtype=pl.List(pl.Int64)))
            )
        else:
            encoded = _lookup(pl.col(name), vocab)
        exprs.append(encoded.alias(name))
    return lf.with_columns(exprs)


def _lookup(expr: pl.Expr, vocab: dict[str, int]) -> pl.Expr:
    if not vocab:
        return pl.lit(0, dtype=pl.Int64)
    return expr.replace_strict(vocab, default=0, return_dtype=pl.Int64).fill_null(0)


# --------------------------------------------------------------------------- build


def build_features(settings: Settings, force: bool = False, raw_dir: Path | None = None) -> FeatureBuild:
    """Build (or confirm up to date) the MovieLens offline store; returns where it is.

    ``raw_dir`` overrides the fetched ``ml-100k`` directory (tests use tiny files).
    """
    data = settings.data
    out = settings.path(data.features_dir)
    if raw_dir is None:
        raw_dir = fetch_movielens(settings.path(data.dir), data.recbole_version)
    raw_dir = Path(raw_dir)
    for name in RAW_FILES.values():
        if not (raw_dir / name).exists():
            raise FileNotFoundError(
                f"{raw_dir / name} is missing: expected recbole atomic files {list(RAW_FILES.values())}"
            )
    key = {
        "pipeline_version": PIPELINE_VERSION,
        "inputs": {name: sha256_file(raw_dir / name) for name in RAW_FILES.values()},
        "params": {
            "split_seed": data.split_seed,
            "split_fractions": list(data.split_fractions),
            "genres_max_len": data.genres_max_len,
            "zip_prefix_len": ZIP_PREFIX_LEN,
        },
    }
    if not force and _up_to_date(out, key):
        return FeatureBuild(out, FeatureSpec.load(out / SPEC_FILE), skipped=True)

    inter = load_interactions(raw_dir).collect()
    if inter.height == 0:
        raise ValueError(f"{raw_dir / RAW_FILES['inter']} has no interactions")
    nulls = [c for c, n in zip(inter.columns, inter.null_count().row(0)) if n]
    if nulls:
        raise ValueError(f"{raw_dir / RAW_FILES['inter']} has empty or non-numeric values in {nulls}")
    inter = inter.with_columns(
        pl.Series("split", random_split(inter.height, data.split_fractions, data.split_seed)),
        (pl.col("rating") >= 4).cast(pl.Int64).alias("label"),
    )
    users, items = _entity_tokens(raw_dir, inter)
    vocabs = fit_vocabs(inter.filter(pl.col("split") == 0), users, items)
    users_enc = encode_columns(users.lazy(), vocabs, data.genres_max_len)
    items_enc = encode_columns(items.lazy(), vocabs, data.genres_max_len)

    # Static attributes are stamped at the first interaction, so point-in-time
    # joins for any interaction see them and Feast can materialize them.
    first_ts: int = inter.get_column("timestamp").min()  # type: ignore[assignment]
    stamp = datetime.fromtimestamp(first_ts, tz=timezone.utc)
    ts = pl.lit(stamp).cast(pl.Datetime("us", "UTC")).alias("event_timestamp")
    users_out, items_out, joined = pl.collect_all([
        users_enc.with_columns(ts),
        items_enc.with_columns(ts),
        # Every interaction user/item has an entity row, so features equal what Feast serves.
        inter.lazy()
        .with_row_index("_row")
        .join(users_enc, on="user", how="left")
        .join(items_enc, on="item", how="left")
        .sort("_row"),  # joins do not promise to keep row order
    ])

    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    rows = {}
    for code, split in enumerate(SPLIT_NAMES):
        part = joined.filter(pl.col("split") == code).select(INTERACTION_COLUMNS)
        rows[split] = part.height
        write_parquet(part, out / split_file(split))
    write_parquet(users_out, out / USERS_FILE)
    write_parquet(items_out, out / ITEMS_FILE)
    _write_text(out / VOCAB_FILE, json.dumps(vocabs, indent=1))

    spec = FeatureSpec(
        sparse=tuple(
            SparseFeature(
                name=name,
                vocab_size=len(vocabs[name]) + 1,
                entity=entity,
                max_len=data.genres_max_len if name in MULTI_VALUED else 1,
            )
            for name, entity in FEATURES
        ),
        meta={
            "dataset": DATASET,
            "input_hash": hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest(),
            "label_rule": "rating >= 4",
            "rows": rows,
            "users": users_out.height,
            "items": items_out.height,
            "positive_rate": {
                s: float(joined.filter(pl.col("split") == c).get_column("label").mean() or 0.0)  # type: ignore
                for c, s in enumerate(SPLIT_NAMES)
            },
            "split": {"seed": data.split_seed, "fractions": list(data.split_fractions)},
            "event_timestamp": stamp.isoformat(),
        },
    )
    spec.save(out / SPEC_FILE)
    _write_text(out / MANIFEST_FILE, json.dumps(key, indent=2) + "\n")
    return FeatureBuild(out, spec, skipped=False)


def _entity_tokens(raw_dir: Path, inter: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Users and items of the raw files plus any that only occur in interactions."""
    users, items = pl.collect_all([user_tokens(load_users(raw_dir)), item_tokens(load_items(raw_dir))])
    for frame, key, name in ((users, "user", "user"), (items, "item", "item")):
        dupes = frame.filter(pl.col(key).is_duplicated()).get_column(key).unique().to_list()
        if dupes:
            raise ValueError(f"{raw_dir / RAW_FILES[name]} lists ids more than once: {sorted(dupes)[:10]}")
    seen_users = inter.select("user").unique(maintain_order=True)
    seen_items = inter.select("item").unique(maintain_order=True)
    extra_users = seen_users.filter(~pl.col("user").is_in(users.get_column("user").implode()))
    extra_items = seen_items.filter(~pl.col("item").is_in(items.get_column("item").implode()))
    users = pl.concat([users, extra_users.with_columns(pl.col("user").alias("user_id"))], how="diagonal")
    items = pl.concat([items, extra_items.with_columns(pl.col("item").alias("item_id"))], how="diagonal")
    return users, items


def _up_to_date(out: Path, key: dict, outputs: Iterable[str] = OUTPUT_FILES) -> bool:
    manifest = out / MANIFEST_FILE
    if not manifest.exists() or not all((out / f).exists() for f in outputs):
        return False
    try:
        return json.loads(manifest.read_text()) == key
    except json.JSONDecodeError:
        return False


def write_parquet(df: pl.DataFrame, path: Path) -> None:
    """Write with plain (not large) Arrow string/list types, atomically.

    Feast's type inference and pandas readers expect ``string``/``list``; polars
    would write ``large_string``/``large_list``.
    """
    table = df.to_arrow()
    table = table.cast(pa.schema([pa.field(f.name, _plain(f.type), f.nullable) for f in table.schema]))
    partial = path.with_name(path.name + ".partial")
    pq.write_table(table, partial)
    partial.replace(path)


def _plain(t: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_list(t) or pa.types.is_list(t) or pa.types.is_list_view(t):
        return pa.list_(_plain(t.value_type))
    return t


def _write_text(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


# --------------------------------------------------------------------------- readers


def features_dir(settings: Settings) -> Path:
    return settings.path(settings.data.features_dir)


def load_vocab(features_dir: Path) -> dict[str, dict[str, int]]:
    """``{feature: {token: id}}`` as written by :func:`build_features`."""
    path = Path(features_dir) / VOCAB_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `recast features build` first")
    return json.loads(path.read_text())


def scan_split(features_dir: Path, split: str) -> pl.LazyFrame:
    path = Path(features_dir) / split_file(split)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `recast features build` first")
    return pl.scan_parquet(path)
