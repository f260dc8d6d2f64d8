"""A real Feast repository (sqlite online store) over the tiny synthetic offline store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from features.feast_repo import (
    DEFINITIONS_FILE,
    FEATURE_STORE_YAML,
    STATE_FILE,
    ensure_feature_store,
    repo_dir,
)
from features.movielens import generate_movielens_sample
from features.online import OnlineFeatureReader
from features.pipeline import ITEMS_FILE, USERS_FILE, build_features
from recast.settings import DataSettings, FeastSettings, Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("home")
    settings = Settings(
        home=home,
        data=DataSettings(dir=Path("raw"), features_dir=Path("features")),
        feast=FeastSettings(repo_dir=Path("feast_repo"), project="recast_test",
                            online_store_path=Path("feast_repo/online.db"),
                            registry_path=Path("feast_repo/registry.db")),
    )
    raw = generate_movielens_sample(home / "raw", n_users=40, n_items=30, n_interactions=600, seed=0)
    build = build_features(settings, raw_dir=raw)
    ensure_feature_store(settings)
    return settings, build


def test_repo_files_are_a_feast_repository(stack) -> None:
    settings, build = stack
    repo = repo_dir(settings)
    config = (repo / FEATURE_STORE_YAML).read_text()
    assert "project: recast_test" in config and "type: sqlite" in config
    assert "entity_key_serialization_version: 3" in config
    definitions = (repo / DEFINITIONS_FILE).read_text()
    # paths relative to the repository: a moved or copied checkout keeps working
    assert "'../features/users.parquet'" in definitions and str(settings.home) not in definitions
    assert 'path: "online.db"' in config and str(settings.home) not in config
    assert settings.path(settings.feast.online_store_path).exists()
    state = json.loads((repo / STATE_FILE).read_text())
    assert state["applied"] == state["materialized"]["config"]


def test_a_moved_checkout_still_serves(stack, tmp_path: Path) -> None:
    import shutil

    settings, build = stack
    moved = tmp_path / "moved"
    shutil.copytree(settings.home, moved)
    reader = OnlineFeatureReader(moved / "feast_repo")
    user = pl.read_parquet(build.path(USERS_FILE)).row(0, named=True)
    assert reader.user_features(user["user"])["user_id"] == user["user_id"]
    again = settings.model_copy(update={"home": moved})
    ensure_feature_store(again)  # re-applied at the new place, nothing to rebuild
    assert json.loads((moved / "feast_repo" / STATE_FILE).read_text())["applied"] != json.loads(
        (repo_dir(settings) / STATE_FILE).read_text())["applied"]


def test_online_values_equal_the_parquet(stack) -> None:
    settings, build = stack
    reader = OnlineFeatureReader(settings)
    users = pl.read_parquet(build.path(USERS_FILE))
    for row in users.iter_rows(named=True):
        got = reader.user_features(row["user"])
        assert got == {k: row[k] for k in ("user_id", "age", "gender", "occupation", "zip_prefix")}
    items = pl.read_parquet(build.path(ITEMS_FILE))
    values, unknown = reader.item_features(items["item"].to_list())
    assert unknown == []
    for name in ("item_id", "release_year", "genres"):
        assert values[name] == items[name].to_list()


def test_unknown_users_and_items(stack) -> None:
    settings, build = stack
    reader = OnlineFeatureReader(repo_dir(settings))  # a repo path works as well as Settings
    assert reader.user_features("no-such-user") is None
    values, unknown = reader.item_features(["1", "nope", "30", "also-nope", "1"])
    assert unknown == ["nope", "also-nope"]
    items = pl.read_parquet(build.path(ITEMS_FILE))
    one = items.filter(pl.col("item") == "1").row(0, named=True)
    assert values["item_id"] == [one["item_id"], 0, 0, 0, one["item_id"]]  # item 30 is cold: id 0
    assert values["release_year"][1] == 0 and values["genres"][1] == []
    assert values["genres"][0] == values["genres"][4] == one["genres"]
    assert values["genres"][2] == []  # item 30 has no genres, but it is known
    assert reader.item_features([]) == ({"item_id": [], "release_year": [], "genres": []}, [])


def test_ensure_is_fast_when_done_and_rematerializes_on_new_sources(stack, monkeypatch) -> None:
    import features.feast_repo as feast_repo

    settings, build = stack
    with monkeypatch.context() as m:  # up to date: neither applied nor materialized again (the slow parts)
        for slow in ("apply_repo", "materialize"):
            m.setattr(feast_repo, slow, lambda *a, _name=slow, **k: pytest.fail(f"{_name} ran on an up-to-date repo"))
        ensure_feature_store(settings)
    # a changed users.parquet is noticed and re-materialized
    users = pl.read_parquet(build.path(USERS_FILE))
    changed = users.with_columns(pl.when(pl.col("user") == "1").then(pl.lit(7)).otherwise(pl.col("age")).alias("age"))
    from features.pipeline import write_parquet

    write_parquet(changed, build.path(USERS_FILE))
    try:
        ensure_feature_store(settings)
        assert OnlineFeatureReader(settings).user_features("1")["age"] == 7
    finally:
        write_parquet(users, build.path(USERS_FILE))
        ensure_feature_store(settings)


def test_online_reader_does_not_import_torch(stack) -> None:
    settings, _ = stack
    code = (
        "import sys; from recast.settings import Settings; from features.online import OnlineFeatureReader; "
        f"r = OnlineFeatureReader({str(repo_dir(settings))!r}); r.item_features(['1']); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_missing_offline_store_is_a_clear_error(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    with pytest.raises(FileNotFoundError, match="recast features build"):
        ensure_feature_store(settings)
    with pytest.raises(FileNotFoundError, match="no Feast repository"):
        OnlineFeatureReader(tmp_path / "nowhere")
