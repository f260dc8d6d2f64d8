"""MovieLens-100K: fetch it from the recbole wheel and read its atomic files.

GroupLens' terms forbid redistributing the data, and no data host is reachable
offline, but the ``recbole`` wheel on PyPI carries ML-100K as recbole "atomic
files" (tab-separated, headers typed like ``user_id:token``). We download the
wheel with the current interpreter's pip (never install it: its pins are
heavy), copy the three files out with :mod:`zipfile`, and pin their sha256 so
later runs are instant and a corrupted cache is noticed and replaced.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import polars as pl

DATASET = "ml-100k"
RAW_FILES = {kind: f"{DATASET}.{kind}" for kind in ("inter", "user", "item")}
_WHEEL_DIR = f"recbole/dataset_example/{DATASET}/"
CHECKSUMS_FILE = "checksums.json"


class MovieLensFetchError(RuntimeError):
    """The recbole wheel could not be downloaded or did not hold the data."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_movielens(data_dir: Path, version: str = "1.2.1") -> Path:
    """Return ``<data_dir>/ml-100k`` holding verified ``ml-100k.{inter,user,item}``.

    Downloads ``recbole==<version>`` only when the cached files are missing or
    their checksums do not match ``checksums.json``.
    """
    target = Path(data_dir) / DATASET
    if _cache_is_valid(target, version):
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="recast-recbole-") as tmp:
        wheel = _download_wheel(version, Path(tmp))
        contents = _read_from_wheel(wheel)
    checksums = {}
    for kind, name in RAW_FILES.items():
        partial = target / (name + ".partial")
        partial.write_bytes(contents[kind])
        partial.replace(target / name)
        checksums[name] = hashlib.sha256(contents[kind]).hexdigest()
    manifest = {"source": f"recbole=={version}", "version": version, "sha256": checksums}
    (target / CHECKSUMS_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return target


def _cache_is_valid(target: Path, version: str) -> bool:
    manifest_path = target / CHECKSUMS_FILE
    if not manifest_path.exists():
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
        return False
    if manifest.get("version") != version:
        return False
    expected = manifest.get("sha256", {})
    for name in RAW_FILES.values():
        path = target / name
        if not path.exists() or expected.get(name) != sha256_file(path):
            return False
    return True


def _download_wheel(version: str, dest: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-q", f"recbole=={version}", "-d", str(dest),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MovieLensFetchError(_fetch_help(version, cmd, str(exc))) from exc
    if proc.returncode != 0:
        raise MovieLensFetchError(_fetch_help(version, cmd, proc.stderr.strip()[-2000:]))
    wheels = sorted(dest.glob("recbole-*.whl"))
    if not wheels:
        raise MovieLensFetchError(_fetch_help(version, cmd, "pip reported success but saved no wheel"))
    return wheels[0]


def _fetch_help(version: str, cmd: list[str], detail: str) -> str:
    return (
        f"could not download the recbole=={version} wheel that carries MovieLens-100K.\n"
        f"command: {' '.join(cmd)}\n{detail}\n"
        "What to do: make sure this interpreter's pip can reach a package index "
        "(PIP_INDEX_URL / PIP_FIND_LINKS), or download the wheel elsewhere with "
        f"`pip download --no-deps recbole=={version}` and put ml-100k.inter/.user/.item "
        "from recbole/dataset_example/ml-100k/ into the data dir, "
        f"or set data.recbole_version to a version your index has."
    )


def _read_from_wheel(wheel: Path) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(wheel) as zf:
            return {kind: zf.read(_WHEEL_DIR + name) for kind, name in RAW_FILES.items()}
    except (KeyError, zipfile.BadZipFile) as exc:
        raise MovieLensFetchError(
            f"{wheel.name} does not contain {_WHEEL_DIR}{{{','.join(RAW_FILES.values())}}} ({exc}); "
            "pick a recbole version that ships dataset_example/ml-100k (1.2.1 does)"
        ) from exc


# --------------------------------------------------------------------------- reading

_ATOMIC_TYPES = {"token", "float", "token_seq", "float_seq"}


def read_atomic(path: Path) -> pl.LazyFrame:
    """Lazily read one recbole atomic file; header ``name:type`` becomes ``name``.

    ``token`` stays a string, ``float`` becomes Float64, ``*_seq`` becomes a list
    (split on spaces, empty pieces dropped). Quotes are literal (titles hold them).
    """
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split("\t")
    names, types = [], []
    for col in header:
        name, sep, kind = col.rpartition(":")
        if not sep or kind not in _ATOMIC_TYPES:
            raise ValueError(
                f"{path}: header column {col!r} is not recbole's `name:type` "
                f"with type in {sorted(_ATOMIC_TYPES)}"
            )
        names.append(name)
        types.append(kind)
    lf = pl.scan_csv(
        path, separator="\t", has_header=True, new_columns=names, quote_char=None,
        schema_overrides={n: pl.String for n in names},
    )
    exprs = []
    for name, kind in zip(names, types):
        column = pl.col(name)
        if kind == "float":
            exprs.append(column.str.strip_chars().cast(pl.Float64, strict=False))
        elif kind.endswith("_seq"):
            parts = column.fill_null("").str.split(" ").list.eval(pl.element().filter(pl.element() != ""))
            if kind == "float_seq":
                parts = parts.list.eval(pl.element().cast(pl.Float64, strict=False))
            exprs.append(parts.alias(name))
        else:
            exprs.append(column)
    return lf.with_columns(exprs)


def load_interactions(raw_dir: Path) -> pl.LazyFrame:
    """``user`` (str), ``item`` (str), ``rating`` (f64), ``timestamp`` (int seconds), file order."""
    lf = read_atomic(Path(raw_dir) / RAW_FILES["inter"])
    return lf.select(
        pl.col("user_id").alias("user"),
        pl.col("item_id").alias("item"),
        pl.col("rating"),
        pl.col("timestamp").cast(pl.Int64),
    )


def load_users(raw_dir: Path) -> pl.LazyFrame:
    """``user``, ``age`` (Int64, null if not a number), ``gender``, ``occupation``, ``zip_code``."""
    lf = read_atomic(Path(raw_dir) / RAW_FILES["user"])
    return lf.select(
        pl.col("user_id").alias("user"),
        pl.col("age").str.strip_chars().cast(pl.Int64, strict=False),
        pl.col("gender"),
        pl.col("occupation"),
        pl.col("zip_code"),
    )


def load_items(raw_dir: Path) -> pl.LazyFrame:
    """``item``, ``release_year`` (Int64, null when unknown, e.g. "unkonwn"), ``genres`` (list of str)."""
    lf = read_atomic(Path(raw_dir) / RAW_FILES["item"])
    return lf.select(
        pl.col("item_id").alias("item"),
        pl.col("release_year").str.strip_chars().cast(pl.Int64, strict=False),
        pl.col("class").alias("genres"),
    )


def load_movielens(raw_dir: Path) -> dict[str, pl.DataFrame]:
    """All three tables, collected (ML-100K fits comfortably in memory)."""
    frames = pl.collect_all([load_interactions(raw_dir), load_users(raw_dir), load_items(raw_dir)])
    return dict(zip(("interactions", "users", "items"), frames))


# --------------------------------------------------------------------------- writing / samples

GENRES = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)


def write_atomic(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    """Write a recbole atomic file: ``header`` like ``["user_id:token", ...]``, one tab-separated row per line."""
    lines = ["\t".join(header)]
    lines += ["\t".join("" if v is None else str(v) for v in row) for row in rows]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def generate_movielens_sample(
    data_dir: Path, n_users: int = 40, n_items: int = 30, n_interactions: int = 600, seed: int = 0
) -> Path:
    """Write a tiny MovieLens-shaped dataset to ``<data_dir>/ml-100k`` (tests, offline smoke runs).

    It keeps the real data's awkward cases: a release year "unkonwn", an item
    with no genres and one with eight, Canadian zip codes, skewed activity (so
    some users and items occur only in val/test), and users/items never rated.
    """
    if n_users < 4 or n_items < 4:
        raise ValueError("need at least 4 users and 4 items")
    rng = np.random.default_rng(seed)
    target = Path(data_dir) / DATASET
    occupations = ("engineer", "student", "writer", "educator", "other")
    users = []
    for u in range(1, n_users + 1):
        zip_code = f"{rng.integers(0, 100_000):05d}" if u % 7 else f"T{u % 10}H{u % 3}N"
        users.append((u, int(rng.integers(7, 74)), "MF"[u % 2], occupations[u % len(occupations)], zip_code))
    items = []
    for i in range(1, n_items + 1):
        year = "unkonwn" if i == n_items else int(rng.integers(1950, 1999))
        if i == n_items:
            genres = ""
        elif i == 2:
            genres = " ".join(GENRES[:8])
        else:
            genres = " ".join(rng.choice(GENRES, size=int(rng.integers(1, 4)), replace=False))
        items.append((i, f"Movie {i}", year, genres))
    # Skewed draws over all but the last user / item, which are never rated.
    uw = 1.0 / np.arange(1, n_users) ** 1.3
    iw = 1.0 / np.arange(1, n_items) ** 1.5
    inter_users = rng.choice(np.arange(1, n_users), size=n_interactions, p=uw / uw.sum())
    inter_items = rng.choice(np.arange(1, n_items), size=n_interactions, p=iw / iw.sum())
    ratings = rng.integers(1, 6, size=n_interactions)
    stamps = 874_724_710 + np.sort(rng.integers(0, 18_000_000, size=n_interactions))
    write_atomic(target / RAW_FILES["user"], ("user_id:token", "age:token", "gender:token",
                                              "occupation:token", "zip_code:token"), users)
    write_atomic(target / RAW_FILES["item"], ("item_id:token", "movie_title:token_seq",
                                              "release_year:token", "class:token_seq"), items)
    write_atomic(target / RAW_FILES["inter"], ("user_id:token", "item_id:token", "rating:float",
                                               "timestamp:float"),
                 zip(inter_users.tolist(), inter_items.tolist(), ratings.tolist(), stamps.tolist()))
    return target
