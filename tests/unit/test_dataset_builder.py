"""Declarative datasets: YAML description -> offline store, on generated CSV / Criteo files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from features.builder import build_dataset
from features.criteo import fit_vocab, generate_criteo_sample, scan_criteo, tokenize
from features.dataset import load_description
from features.feast_repo import FEATURE_STORE_YAML, entity_features, render_definitions, render_feature_store_yaml
from features.samples import generate_ratings_csv
from features.splits import random_split
from features.spec import FeatureSpec
from recast.settings import DataSettings, Settings


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("shop")
    yaml_path = generate_ratings_csv(home / "raw")
    build = build_dataset(load_description(yaml_path, home), home / "features")
    return yaml_path, build


def test_description_becomes_the_offline_store(shop) -> None:
    yaml_path, build = shop
    spec = build.spec
    assert spec.names == ["user_id", "item_id", "genres", "price", "age", "country", "device"]
    assert [f.entity for f in spec.sparse] == ["user", "item", "item", "item", "user", "user", "context"]
    assert spec.feature("genres").max_len == 3 and spec.feature("price").max_len == 1
    assert spec.meta["dataset"] == "shop" and len(spec.meta["input_hash"]) == 64
    assert spec.meta["rows"] == {"train": 2400, "val": 300, "test": 300}
    # age buckets [25, 35, 50] -> at most 4 tokens + unknown
    assert spec.feature("age").vocab_size <= 5
    raw = pl.read_csv(yaml_path.parent / "ratings.csv")
    train = pl.read_parquet(build.path("interactions_train.parquet"))
    codes = random_split(raw.height, (0.8, 0.1, 0.1), seed=7)
    expected = (raw.filter(pl.Series(codes == 0)).get_column("stars") >= 4).cast(pl.Int64)
    assert train.get_column("label").to_list() == expected.to_list()
    # vocabularies from training rows only: ids seen only in val/test are unknown there
    vocab = json.loads(build.path("vocab.json").read_text())
    assert set(vocab["user_id"]) == set(train.get_column("user").unique())
    assert "u59" not in vocab["user_id"]  # a user who never rated: in users.parquet, id 0
    users = pl.read_parquet(build.path("users.parquet"))
    assert users.filter(pl.col("user") == "u59").get_column("user_id").to_list() == [0]
    items = pl.read_parquet(build.path("items.parquet"))
    assert items.filter(pl.col("item") == "i38").get_column("genres").to_list() == [[]]  # no genres


def test_rebuild_is_skipped_until_an_input_changes(shop, tmp_path: Path) -> None:
    yaml_path, build = shop
    desc = load_description(yaml_path, tmp_path)
    assert build_dataset(desc, build.features_dir).skipped
    ratings = yaml_path.parent / "ratings.csv"
    copy = tmp_path / "raw"
    copy.mkdir()
    for f in yaml_path.parent.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "ratings.csv").write_text(ratings.read_text().replace(",5,", ",4,", 1))
    other = build_dataset(load_description(copy / "dataset.yaml", tmp_path), tmp_path / "features")
    assert other.spec.meta["input_hash"] != build.spec.meta["input_hash"]


def test_missing_user_metadata_means_absent_fields(tmp_path: Path) -> None:
    yaml_path = generate_ratings_csv(tmp_path / "raw", with_users=False)
    spec = build_dataset(load_description(yaml_path, tmp_path), tmp_path / "features").spec
    assert spec.names == ["user_id", "item_id", "genres", "price", "device"]
    assert [f.name for f in spec.by_entity("user")] == ["user_id"]


def test_time_split_puts_the_newest_rows_last(tmp_path: Path) -> None:
    yaml_path = generate_ratings_csv(tmp_path / "raw", split="time")
    build = build_dataset(load_description(yaml_path, tmp_path), tmp_path / "features")
    ts = {s: pl.read_parquet(build.path(f"interactions_{s}.parquet")).get_column("timestamp") for s in ("train", "val", "test")}
    assert ts["train"].max() <= ts["val"].min() and ts["val"].max() <= ts["test"].min()


def test_builtin_ratings_layout_infers_metadata_fields(tmp_path: Path) -> None:
    raw = tmp_path / "ratings"
    generate_ratings_csv(raw)
    (raw / "ratings.csv").write_text(pl.read_csv(raw / "ratings.csv").rename(
        {"stars": "rating", "rated_at": "timestamp"}).write_csv())
    spec = build_dataset(load_description("ratings-csv", tmp_path), tmp_path / "features").spec
    # title is unique text (skipped); genres holds "|" (multi-valued); many-valued numbers -> log2 buckets
    assert spec.names == ["user_id", "item_id", "age", "country", "genres", "price"]
    assert spec.feature("genres").multi_valued and spec.feature("price").vocab_size < 15
    (raw / "users.csv").unlink()  # optional: without it users have only their id
    spec = build_dataset(load_description("ratings-csv", tmp_path), tmp_path / "features").spec
    assert spec.names == ["user_id", "item_id", "genres", "price"]


def test_builtin_criteo_matches_the_criteo_reader(tmp_path: Path) -> None:
    generate_criteo_sample(tmp_path / "criteo" / "train.txt", n_rows=3000, seed=3)
    build = build_dataset(load_description("criteo", tmp_path), tmp_path / "features")
    spec = build.spec
    assert len(spec.sparse) == 39 and all(f.entity == "context" for f in spec.sparse)
    # same tokens and min-count rule as features/criteo.py fitted on the same training rows
    codes = random_split(3000, (0.8, 0.1, 0.1), seed=2019)
    train_rows = scan_criteo(tmp_path / "criteo" / "train.txt").collect().filter(pl.Series(codes == 0))
    expected = fit_vocab(tokenize(train_rows.lazy()), min_count=10)
    assert json.loads(build.path("vocab.json").read_text()) == expected
    assert not build.path("users.parquet").exists()


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.replace("item: item_id,", "item: product,"), r"no column\(s\) \['product'\]"),
    (lambda d: d.replace("path: ratings.csv,", "path: ratings.csv, separator: ';',"), "single column .* separated by ','"),
    (lambda d: d.replace("[0.8, 0.1, 0.1]", "[0.9, 0.1, 0.0]"), r"split \['test'\] would be empty"),
    (lambda d: d.replace('">= 4"', '">= 9"'), "same label .* to every row"),
    (lambda d: d.replace("type: numeric, numeric: log2", "type: numeric, numeric: log2, bogus: 1"), "bogus"),
    (lambda d: d.replace("{name: country, entity: user}", "{name: country, entity: user, type: numeric}"),
     "not numbers"),
])
def test_bad_descriptions_and_inputs_are_clear_errors(tmp_path: Path, edit, message) -> None:
    yaml_path = generate_ratings_csv(tmp_path / "raw", n_ratings=400)
    yaml_path.write_text(edit(yaml_path.read_text()))
    with pytest.raises(ValueError, match=message):
        build_dataset(load_description(yaml_path, tmp_path), tmp_path / "features")
    assert not (tmp_path / "features" / "spec.json").exists()


def test_unknown_dataset_name_lists_the_builtins(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="criteo.*ratings-csv"):
        load_description("no-such-dataset", tmp_path)


def test_feast_repository_follows_the_dataset_and_uses_relative_paths(shop, tmp_path: Path) -> None:
    _, build = shop
    settings = Settings(home=tmp_path, data=DataSettings(features_dir=build.features_dir))
    assert entity_features(settings) == {
        "user": [("user_id", False), ("age", False), ("country", False)],
        "item": [("item_id", False), ("genres", True), ("price", False)],
    }
    yaml_text, definitions = render_feature_store_yaml(settings), render_definitions(settings)
    assert str(tmp_path) not in yaml_text and "path: \"registry.db\"" in yaml_text
    assert str(build.features_dir) not in definitions and str(tmp_path) not in definitions
    assert "Field(name='genres', dtype=Array(Int64))" in definitions and "'occupation'" not in definitions
    assert FEATURE_STORE_YAML == "feature_store.yaml"
    spec = FeatureSpec.load(build.path("spec.json"))
    assert np.array_equal(sorted(spec.names), sorted(["user_id", "item_id", "genres", "price", "age", "country", "device"]))


def test_normalized_numeric_is_a_dense_input_with_train_statistics(tmp_path: Path) -> None:
    yaml_path = generate_ratings_csv(tmp_path / "raw", n_ratings=500)
    yaml_path.write_text(yaml_path.read_text().replace(
        "  - {name: device, entity: context}",
        "  - {name: device, entity: context}\n  - {name: stars_z, column: stars, type: numeric, numeric: normalize}"))
    build = build_dataset(load_description(yaml_path, tmp_path), tmp_path / "features")
    assert build.spec.dense == ("stars_z",) and "stars_z" not in build.spec.names
    train = pl.read_parquet(build.path("interactions_train.parquet")).get_column("stars_z")
    assert abs(train.mean()) < 1e-9 and train.std() == pytest.approx(1.0)
    stats = build.spec.meta["dense_normalization"]["stars_z"]
    raw = pl.read_csv(yaml_path.parent / "ratings.csv").filter(pl.Series(random_split(500, (0.8, 0.1, 0.1), 7) == 0))
    assert stats["mean"] == pytest.approx(raw.get_column("stars").mean())
    with pytest.raises(ValueError, match="dense input"):
        yaml_path.write_text(yaml_path.read_text().replace("{name: price, entity: item, type: numeric, numeric: log2}",
                                                           "{name: price, entity: item, type: numeric, numeric: normalize}"))
        load_description(yaml_path, tmp_path)
