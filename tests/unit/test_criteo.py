"""Criteo-format loader: integer bucketization, missing values, min-count vocabularies."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest

from features.criteo import (
    CAT_COLUMNS,
    COLUMNS,
    INT_COLUMNS,
    MISSING,
    generate_criteo_sample,
    int_bucket,
    int_bucket_expr,
    load_criteo,
)


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Criteo TSV from sparse dicts: unspecified columns are empty (missing)."""
    lines = ["\t".join("" if r.get(c) is None else str(r[c]) for c in COLUMNS) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_int_bucket_follows_log_squared_rule() -> None:
    assert int_bucket(None) == MISSING
    assert [int_bucket(v) for v in (-3, 0, 1, 2)] == ["v-3", "v0", "v1", "v2"]
    assert int_bucket(3) == "b1"  # ln(3)^2 = 1.21
    assert int_bucket(100) == f"b{math.floor(math.log(100) ** 2)}" == "b21"
    assert int_bucket(10**9) == "b429"
    values = [None, -2, 0, 1, 2, 3, 4, 7, 8, 55, 1000, 123456789]
    df = pl.DataFrame({"x": values}, schema={"x": pl.Int64})
    assert df.select(int_bucket_expr(pl.col("x")).alias("t"))["t"].to_list() == [int_bucket(v) for v in values]


def test_hand_written_file_min_count_and_missing(tmp_path: Path) -> None:
    rows = []
    for i in range(6):
        rows.append({"label": i % 2, "I1": 5, "I2": -1 if i < 3 else None,
                     "C1": "aaaaaaaa", "C2": "rare0000" if i == 0 else None})
    rows.append({"label": 1, "I1": 200, "C1": "bbbbbbbb", "C2": "cccccccc"})
    data = load_criteo(write_rows(tmp_path / "hand.tsv", rows), min_count=2)
    df = data.frame
    assert df.columns == list(COLUMNS)
    assert all(dtype == pl.Int64 for dtype in df.schema.values())
    assert df["label"].to_list() == [0, 1, 0, 1, 0, 1, 1]
    # integers: every bucket gets an id, missing is a bucket of its own
    assert set(data.vocab["I1"]) == {"b2", "b28"}  # ln(5)^2 = 2.59, ln(200)^2 = 28.07
    assert set(data.vocab["I2"]) == {"v-1", MISSING}
    assert df["I2"].n_unique() == 2 and 0 not in df["I2"].to_list()
    assert set(data.vocab["I3"]) == {MISSING} and set(df["I3"].to_list()) == {1}
    # categoricals: tokens seen fewer than min_count times fall to OOV 0; missing is a token
    assert set(data.vocab["C1"]) == {"aaaaaaaa"}
    assert df["C1"].to_list() == [1] * 6 + [0]
    assert set(data.vocab["C2"]) == {MISSING}
    assert df["C2"].to_list() == [0, 1, 1, 1, 1, 1, 0]
    assert data.spec.feature("C1").vocab_size == 2 and data.spec.feature("I1").vocab_size == 3


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_criteo_sample(tmp_path_factory.mktemp("criteo") / "train.tsv", n_rows=3000, seed=7)


def test_generated_sample_is_criteo_shaped(sample: Path) -> None:
    first = sample.read_text().splitlines()[0].split("\t")
    assert len(first) == 40 and first[0] in ("0", "1")
    raw = pl.read_csv(sample, separator="\t", has_header=False, new_columns=list(COLUMNS),
                      schema_overrides={c: pl.String for c in COLUMNS})
    assert raw.height == 3000
    assert raw.select(pl.col(c).is_null().any() for c in INT_COLUMNS).row(0) != (False,) * 13
    assert raw.select(pl.col(c).is_null().any() for c in CAT_COLUMNS).row(0) != (False,) * 26
    assert raw["C3"].drop_nulls().str.len_chars().unique().to_list() == [8]
    assert (raw["I2"].drop_nulls().cast(pl.Int64) < 0).any()
    assert generate_criteo_sample(sample.with_name("again.tsv"), 3000, seed=7).read_bytes() == sample.read_bytes()


def test_load_generated_sample_and_encode_with_train_vocab(sample: Path, tmp_path: Path) -> None:
    train = load_criteo(sample, min_count=10)
    spec = train.spec
    assert spec.names == [*INT_COLUMNS, *CAT_COLUMNS]
    assert all(f.max_len == 1 and f.entity == "context" for f in spec.sparse)
    assert spec.meta["rows"] == 3000 and spec.meta["dataset"] == "criteo"
    for f in spec.sparse:
        col = train.frame[f.name]
        assert col.min() >= 0 and col.max() < f.vocab_size == len(train.vocab[f.name]) + 1
        assert list(train.vocab[f.name].values()) == list(range(1, f.vocab_size))
    # high-cardinality columns lose their rare tokens to OOV; small ones keep everything
    assert (train.frame["C5"] == 0).any() and not (train.frame["C1"] == 0).any()
    assert (train.frame["I1"] > 0).all()
    # a file encoded with train's vocabulary keeps ids stable and sends unseen tokens to 0
    other = generate_criteo_sample(tmp_path / "other.tsv", n_rows=500, seed=8)
    val = load_criteo(other, vocab=train.vocab)
    assert val.spec == spec and val.vocab is train.vocab
    assert val.frame.height == 500


def test_missing_file_and_bad_min_count(tmp_path: Path, sample: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_criteo(tmp_path / "nope.tsv")
    with pytest.raises(ValueError, match="min_count"):
        load_criteo(sample, min_count=0)
