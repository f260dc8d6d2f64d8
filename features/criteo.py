"""Criteo display-advertising format: loader, encoder and a sample generator.

A Criteo file is tab-separated without header: ``label``, 13 integer counts
``I1..I13`` and 26 hashed categoricals ``C1..C26`` (8 hex chars); an empty
field is a missing value. Everything is turned into sparse ids:

* integers follow the Kaggle-winning "3 Idiots" trick: a value ``v > 2`` becomes
  the bucket ``floor(ln(v)^2)`` (fine resolution for small counts, coarse for
  the long tail), ``v <= 2`` (including negative ``I2``) keeps its own token,
  and missing is its own token. Every token seen when fitting gets an id.
* categoricals keep tokens seen at least ``min_count`` times when fitting
  (missing counts as a token too); rarer or unseen ones map to 0 (OOV).

Ids follow ``features.spec``: 0 = unknown, 1..n in a deterministic order.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from features.pipeline import build_vocab
from features.spec import FeatureSpec, SparseFeature

INT_COLUMNS = tuple(f"I{i}" for i in range(1, 14))
CAT_COLUMNS = tuple(f"C{i}" for i in range(1, 27))
COLUMNS = ("label", *INT_COLUMNS, *CAT_COLUMNS)
MISSING = "__missing__"
SCHEMA = {"label": pl.Int64, **{c: pl.Int64 for c in INT_COLUMNS}, **{c: pl.String for c in CAT_COLUMNS}}


class CriteoData(NamedTuple):
    frame: pl.DataFrame
    """``label`` then one Int64 id column per feature (I1..I13, C1..C26)."""
    spec: FeatureSpec
    vocab: dict[str, dict[str, int]]
    """Pass it back to :func:`load_criteo` to encode val/test with train's ids."""


def int_bucket(value: int | None) -> str:
    """Token of one integer value (reference for :func:`int_bucket_expr`)."""
    if value is None:
        return MISSING
    if value > 2:
        return f"b{math.floor(math.log(value) ** 2)}"
    return f"v{value}"


def int_bucket_expr(col: pl.Expr) -> pl.Expr:
    bucket = (col.cast(pl.Float64).log() ** 2).floor().cast(pl.Int64).cast(pl.String)
    return (
        pl.when(col.is_null()).then(pl.lit(MISSING))
        .when(col > 2).then(pl.lit("b") + bucket)
        .otherwise(pl.lit("v") + col.cast(pl.String))
    )


def scan_criteo(path: Path) -> pl.LazyFrame:
    """Lazily read a Criteo-format TSV with typed columns (empty fields -> null)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Criteo file {path} does not exist")
    return pl.scan_csv(path, separator="\t", has_header=False, schema=SCHEMA, quote_char=None)


def tokenize(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Every feature as a string token: integer buckets, categoricals, MISSING."""
    return lf.select(
        pl.col("label").fill_null(0),
        *(int_bucket_expr(pl.col(c)).alias(c) for c in INT_COLUMNS),
        *(pl.col(c).fill_null(MISSING).alias(c) for c in CAT_COLUMNS),
    )


def fit_vocab(tokens: pl.LazyFrame, min_count: int = 10) -> dict[str, dict[str, int]]:
    """Vocabulary per feature: all integer buckets; categoricals seen ``>= min_count`` times."""
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    queries = [
        tokens.group_by(c).len().filter(pl.col("len") >= (1 if c in INT_COLUMNS else min_count)).select(c)
        for c in (*INT_COLUMNS, *CAT_COLUMNS)
    ]
    frames = pl.collect_all(queries)
    return {f.columns[0]: build_vocab(f.get_column(f.columns[0]).to_list()) for f in frames}


def encode(tokens: pl.LazyFrame, vocab: dict[str, dict[str, int]]) -> pl.LazyFrame:
    exprs = [pl.col("label").cast(pl.Int64)]
    for c in (*INT_COLUMNS, *CAT_COLUMNS):
        mapping = vocab.get(c, {})
        if mapping:
            exprs.append(pl.col(c).replace_strict(mapping, default=0, return_dtype=pl.Int64).alias(c))
        else:
            exprs.append(pl.lit(0, dtype=pl.Int64).alias(c))
    return tokens.select(exprs)


def criteo_spec(vocab: dict[str, dict[str, int]], **meta) -> FeatureSpec:
    return FeatureSpec(
        sparse=tuple(SparseFeature(c, len(vocab.get(c, {})) + 1, "context") for c in (*INT_COLUMNS, *CAT_COLUMNS)),
        meta={"dataset": "criteo", **meta},
    )


def load_criteo(path: Path, min_count: int = 10, vocab: dict[str, dict[str, int]] | None = None) -> CriteoData:
    """Encode a Criteo file; fit the vocabulary on it unless ``vocab`` is given."""
    tokens = tokenize(scan_criteo(path))
    if vocab is None:
        vocab = fit_vocab(tokens, min_count)
    frame = encode(tokens, vocab).collect()
    return CriteoData(frame, criteo_spec(vocab, rows=frame.height, min_count=min_count), vocab)


def generate_criteo_sample(path: Path, n_rows: int, seed: int = 0) -> Path:
    """Write a synthetic file in Criteo format (for tests and smoke runs).

    Counts are log-normal with per-column missing rates (``I2`` may be
    negative, as in the real data); categoricals are Zipf-distributed hex
    tokens with cardinalities from 3 to 5000; the label depends on ``I1`` and
    ``C1`` so a model has something to learn.
    """
    rng = np.random.default_rng(seed)
    data: dict[str, pl.Series] = {}
    for i, c in enumerate(INT_COLUMNS):
        values = np.floor(rng.lognormal(mean=0.5 + 0.25 * i, sigma=1.5, size=n_rows)).astype(np.int64)
        if c == "I2":
            values -= rng.integers(0, 4, size=n_rows)
        missing = rng.random(n_rows) < (0.02 + 0.03 * (i % 5))
        data[c] = pl.Series(c, values, dtype=pl.Int64).scatter(np.flatnonzero(missing), None)
    cards = (3, 10, 50, 500, 5000)
    for j, c in enumerate(CAT_COLUMNS):
        k = cards[j % len(cards)]
        weights = 1.0 / np.arange(1, k + 1) ** 1.1
        ranks = rng.choice(k, size=n_rows, p=weights / weights.sum())
        tokens = np.array([f"{((j + 1) * 1_000_003 + r) * 2_654_435_761 % 2**32:08x}" for r in range(k)])
        missing = rng.random(n_rows) < (0.15 if j % 4 == 3 else 0.0)
        data[c] = pl.Series(c, tokens[ranks]).scatter(np.flatnonzero(missing), None)
    c1_top = data["C1"] == data["C1"].drop_nulls().mode().first()
    i1 = data["I1"].fill_null(0).to_numpy()
    logit = -1.5 + 0.35 * np.log1p(np.maximum(i1, 0)) + 1.0 * c1_top.fill_null(False).to_numpy()
    label = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    frame = pl.DataFrame({"label": label, **data}).select(COLUMNS)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(path, separator="\t", include_header=False, null_value="", quote_style="never")
    return path
