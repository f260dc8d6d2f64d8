"""MovieLens feature pipeline on a tiny synthetic dataset: splits, vocabularies, OOV, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from features.movielens import RAW_FILES, generate_movielens_sample, load_movielens
from features.pipeline import (
    FEATURE_NAMES,
    ITEMS_FILE,
    SPEC_FILE,
    USERS_FILE,
    VOCAB_FILE,
    age_bucket,
    _age_bucket_expr,
    build_features,
    build_vocab,
    encode_columns,
    load_vocab,
    split_file,
)
from features.spec import FeatureSpec
from features.splits import random_split, split_sizes
from recast.settings import DataSettings, Settings

N_INTER = 600


def make_settings(home: Path, **data) -> Settings:
    return Settings(home=home, data=DataSettings(dir=Path("raw"), features_dir=Path("features"), **data))


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic data plus two cold-start rows placed where the seeded split puts test rows:
    user 40 / item 30 (in the entity files, otherwise never rated) and user/item 999
    (in no entity file at all)."""
    raw = generate_movielens_sample(tmp_path_factory.mktemp("raw"), n_users=40, n_items=30,
                                    n_interactions=N_INTER, seed=0)
    test_rows = np.flatnonzero(random_split(N_INTER, (0.8, 0.1, 0.1), seed=2019) == 2)
    path = raw / RAW_FILES["inter"]
    lines = path.read_text().splitlines()
    for row, entity in zip(test_rows[:2], (("40", "30"), ("999", "999"))):
        fields = lines[row + 1].split("\t")
        lines[row + 1] = "\t".join([*entity, *fields[2:]])
    path.write_text("\n".join(lines) + "\n")
    return raw


@pytest.fixture(scope="module")
def built(raw: Path, tmp_path_factory: pytest.TempPathFactory):
    settings = make_settings(tmp_path_factory.mktemp("home"))
    return build_features(settings, raw_dir=raw)


def read(built, name: str) -> pl.DataFrame:
    return pl.read_parquet(built.path(name))


# --------------------------------------------------------------------------- splits


def test_split_sizes_round_train_and_val() -> None:
    assert split_sizes(100_000, (0.8, 0.1, 0.1)) == (80_000, 10_000, 10_000)
    assert split_sizes(10, (0.8, 0.1, 0.1)) == (8, 1, 1)
    assert sum(split_sizes(601, (0.8, 0.1, 0.1))) == 601
    with pytest.raises(ValueError, match="sum to 1"):
        split_sizes(10, (0.8, 0.1, 0.2))


def test_random_split_follows_the_seeded_permutation() -> None:
    codes = random_split(1000, (0.8, 0.1, 0.1), seed=2019)
    perm = np.random.default_rng(2019).permutation(1000)
    assert (codes[perm[:800]] == 0).all() and (codes[perm[800:900]] == 1).all() and (codes[perm[900:]] == 2).all()
    assert np.array_equal(codes, random_split(1000, (0.8, 0.1, 0.1), seed=2019))
    assert not np.array_equal(codes, random_split(1000, (0.8, 0.1, 0.1), seed=2020))


# --------------------------------------------------------------------------- vocab / encoding


def test_build_vocab_reserves_zero_and_sorts_deterministically() -> None:
    vocab = build_vocab(["10", "2", None, "b", "", "2", "A", "1"])
    assert vocab == {"1": 1, "2": 2, "10": 3, "A": 4, "b": 5}
    assert build_vocab([]) == {}


def test_encode_maps_unknown_to_zero_and_never_pads_lists() -> None:
    vocabs = {"gender": {"F": 1, "M": 2}, "genres": build_vocab(["Action", "Comedy", "Drama", "War"])}
    lf = pl.LazyFrame({
        "gender": ["M", "X", None, "F"],
        "genres": [["Drama", "Horror", "Action"], ["Horror"], None, ["War", "Comedy", "Drama", "Action"]],
    })
    out = encode_columns(lf, vocabs, max_len=3).collect()
    assert out["gender"].to_list() == [2, 0, 0, 1]
    # unknown genres are dropped (not encoded as 0), lists are cut to max_len, never padded
    assert out["genres"].to_list() == [[3, 1], [], [], [4, 2, 3]]
    assert out.schema["genres"] == pl.List(pl.Int64)


def test_age_buckets_match_between_python_and_polars() -> None:
    assert [age_bucket(a) for a in (None, 17, 18, 24, 25, 34, 35, 44, 45, 49, 50, 55, 56, 90)] == [
        None, "<18", "18-24", "18-24", "25-34", "25-34", "35-44", "35-44", "45-49", "45-49",
        "50-55", "50-55", "56+", "56+"]
    ages = pl.DataFrame({"age": [None, *range(0, 100)]}, schema={"age": pl.Int64})
    via_polars = ages.select(_age_bucket_expr(pl.col("age")).alias("bucket"))["bucket"].to_list()
    assert via_polars == [age_bucket(a) for a in ages["age"].to_list()]


# --------------------------------------------------------------------------- outputs


def test_output_schemas(built) -> None:
    encoded = {n: pl.Int64 for n in FEATURE_NAMES} | {"genres": pl.List(pl.Int64)}
    for split in ("train", "val", "test"):
        assert read(built, split_file(split)).schema == pl.Schema(
            {"user": pl.String, "item": pl.String, "timestamp": pl.Int64, "label": pl.Int64} | encoded)
    ts = pl.Datetime("us", "UTC")
    assert read(built, USERS_FILE).schema == pl.Schema(
        {"user": pl.String, "user_id": pl.Int64, "age": pl.Int64, "gender": pl.Int64,
         "occupation": pl.Int64, "zip_prefix": pl.Int64, "event_timestamp": ts})
    assert read(built, ITEMS_FILE).schema == pl.Schema(
        {"item": pl.String, "item_id": pl.Int64, "release_year": pl.Int64,
         "genres": pl.List(pl.Int64), "event_timestamp": ts})


def test_split_proportions_order_and_labels(built, raw: Path) -> None:
    inter = load_movielens(raw)["interactions"]
    codes = random_split(inter.height, (0.8, 0.1, 0.1), seed=2019)
    for code, split in enumerate(("train", "val", "test")):
        got = read(built, split_file(split))
        want = inter.filter(pl.Series(codes == code))
        assert got.height == split_sizes(N_INTER, (0.8, 0.1, 0.1))[code]
        assert got.select("user", "item", "timestamp").equals(want.select("user", "item", "timestamp"))
        assert got["label"].to_list() == (want["rating"] >= 4).cast(pl.Int64).to_list()
    assert built.spec.meta["rows"] == {"train": 480, "val": 60, "test": 60}


def test_vocabularies_come_from_train_only(built) -> None:
    vocab = load_vocab(built.features_dir)
    train, users, items = read(built, split_file("train")), read(built, USERS_FILE), read(built, ITEMS_FILE)
    assert set(vocab["user_id"]) == set(train["user"])
    assert set(vocab["item_id"]) == set(train["item"])
    for name in ("user_id", "item_id", "genres"):
        assert list(vocab[name].values()) == list(range(1, len(vocab[name]) + 1))
    train_genres = items.filter(pl.col("item").is_in(train["item"].implode()))
    assert len(vocab["genres"]) == train_genres["genres"].explode().drop_nulls().n_unique()
    # every id used in any split is 0 or in 1..n
    for split in ("train", "val", "test"):
        df = read(built, split_file(split))
        for f in built.spec.sparse:
            col = df[f.name].explode() if f.multi_valued else df[f.name]
            assert col.min() >= 0 and col.max() < f.vocab_size
    assert (read(built, split_file("train"))["user_id"] > 0).all()
    # cold-start rows exist in val/test and are encoded 0, like at serving time
    rest = pl.concat([read(built, split_file("val")), read(built, split_file("test"))])
    cold = rest.filter(~pl.col("user").is_in(train["user"].implode()))
    assert cold.height > 0 and (cold["user_id"] == 0).all()
    cold_items = rest.filter(~pl.col("item").is_in(train["item"].implode()))
    assert cold_items.height > 0 and (cold_items["item_id"] == 0).all()
    assert users.height == 41 and items.height == 31  # 999 only occurs in interactions


def test_entity_tables_keep_everyone_and_match_interactions(built) -> None:
    users, items = read(built, USERS_FILE), read(built, ITEMS_FILE)
    never_rated = users.filter(pl.col("user") == "40").row(0, named=True)
    assert never_rated["user_id"] == 0 and never_rated["gender"] > 0 and never_rated["occupation"] > 0
    nowhere = users.filter(pl.col("user") == "999").row(0, named=True)
    assert [nowhere[n] for n in ("user_id", "age", "gender", "occupation", "zip_prefix")] == [0] * 5
    unknown_year = items.filter(pl.col("item") == "30").row(0, named=True)
    assert unknown_year["release_year"] == 0 and unknown_year["genres"] == []
    assert items["genres"].list.len().max() <= 6
    assert not items["genres"].list.contains(0).any()
    eight_genres = items.filter(pl.col("item") == "2")["genres"].to_list()[0]
    assert 0 < len(eight_genres) <= 6
    # interaction rows carry exactly the entity-table features (train/serve consistency)
    test = read(built, split_file("test"))
    joined = test.join(users.drop("event_timestamp"), on="user", suffix="_u").join(
        items.drop("event_timestamp"), on="item", suffix="_i")
    for name in ("user_id", "age", "gender", "occupation", "zip_prefix"):
        assert joined[name].equals(joined[f"{name}_u"], check_names=False)
    for name in ("item_id", "release_year", "genres"):
        assert joined[name].equals(joined[f"{name}_i"], check_names=False)


def test_spec_and_vocab_files(built) -> None:
    spec = FeatureSpec.load(built.path(SPEC_FILE))
    vocab = json.loads(built.path(VOCAB_FILE).read_text())
    assert spec.names == ["user_id", "item_id", "age", "gender", "occupation", "zip_prefix",
                          "release_year", "genres"]
    assert [f.entity for f in spec.sparse] == ["user", "item", "user", "user", "user", "user", "item", "item"]
    assert {f.name: f.vocab_size for f in spec.sparse} == {n: len(v) + 1 for n, v in vocab.items()}
    assert spec.feature("genres").max_len == 6 and spec.total_slots == 13
    assert spec.meta["dataset"] == "ml-100k" and spec.meta["users"] == 41 and spec.meta["items"] == 31
    assert len(spec.meta["input_hash"]) == 64  # inputs + parameters: another file or seed, another hash


# --------------------------------------------------------------------------- idempotence


def test_rebuild_is_skipped_unless_inputs_or_params_change(raw: Path, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    first = build_features(settings, raw_dir=raw)
    assert not first.skipped
    mtime = first.path(split_file("train")).stat().st_mtime_ns
    again = build_features(settings, raw_dir=raw)
    assert again.skipped and again.spec == first.spec
    assert first.path(split_file("train")).stat().st_mtime_ns == mtime
    assert not build_features(settings, force=True, raw_dir=raw).skipped
    assert not build_features(make_settings(tmp_path, genres_max_len=2), raw_dir=raw).skipped
    first.path(USERS_FILE).unlink()
    assert not build_features(make_settings(tmp_path, genres_max_len=2), raw_dir=raw).skipped


def test_changed_input_triggers_rebuild_and_builds_are_deterministic(raw: Path, tmp_path: Path) -> None:
    copy = tmp_path / "raw" / "ml-100k"
    copy.mkdir(parents=True)
    for name in RAW_FILES.values():
        (copy / name).write_bytes((raw / name).read_bytes())
    a = build_features(make_settings(tmp_path / "a"), raw_dir=copy)
    b = build_features(make_settings(tmp_path / "b"), raw_dir=raw)
    for name in (split_file("train"), split_file("test"), USERS_FILE, ITEMS_FILE):
        assert pl.read_parquet(a.path(name)).equals(pl.read_parquet(b.path(name)))
    with open(copy / RAW_FILES["inter"], "a") as f:
        f.write("1\t1\t5\t892700000\n")
    rebuilt = build_features(make_settings(tmp_path / "a"), raw_dir=copy)
    assert not rebuilt.skipped and sum(rebuilt.spec.meta["rows"].values()) == N_INTER + 1


def test_bad_raw_files_are_clear_errors(raw: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="atomic files"):
        build_features(make_settings(tmp_path), raw_dir=tmp_path)
    for name in RAW_FILES.values():
        (tmp_path / name).write_bytes((raw / name).read_bytes())
    with open(tmp_path / RAW_FILES["inter"], "a") as f:
        f.write("1\t1\tfive\t892700000\n")
    with pytest.raises(ValueError, match="rating"):
        build_features(make_settings(tmp_path), raw_dir=tmp_path)


@pytest.mark.integration
def test_build_real_movielens(tmp_path: Path) -> None:
    """Fetches ML-100K from the recbole wheel and builds the real offline store (seconds)."""
    result = build_features(make_settings(tmp_path))
    assert result.spec.meta["rows"] == {"train": 80_000, "val": 10_000, "test": 10_000}
    assert result.spec.meta["users"] == 943 and result.spec.meta["items"] == 1_682
    assert 0.5 < result.spec.meta["positive_rate"]["train"] < 0.6
