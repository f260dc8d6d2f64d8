"""Build the offline store from a dataset description (features/dataset.py).

The outputs are those of the MovieLens pipeline (features/pipeline.py):
``interactions_{train,val,test}.parquet`` (``user``, ``item`` when the
dataset has them, ``timestamp``, ``label``, then every feature column),
``users.parquet`` / ``items.parquet`` (the Feast sources, when the dataset has
user and item ids), ``vocab.json``, ``spec.json`` (dataset name + input hash)
and ``manifest.json``. As there, vocabularies come from the training rows only
(entity fields: the users/items that occur in training interactions), so
validation and test see cold starts and unseen tokens exactly as serving does.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

from features.dataset import DatasetDescription, FieldSpec, Source
from features.movielens import sha256_file
from features.pipeline import (
    ITEMS_FILE,
    MANIFEST_FILE,
    SPEC_FILE,
    USERS_FILE,
    VOCAB_FILE,
    FeatureBuild,
    _up_to_date,
    _write_text,
    build_vocab,
    encode_columns,
    split_file,
    write_parquet,
)
from features.spec import FeatureSpec, SparseFeature
from features.splits import SPLIT_NAMES, random_split, split_sizes
from features.tokens import field_tokens, numeric_values

BUILDER_VERSION = 1
NO_TIMESTAMP = datetime(2000, 1, 1, tzinfo=timezone.utc)
"""Entity rows' event time when the interactions carry no timestamp."""
_SEPARATORS = (",", "\t", ";", "|")
AUTO_NUMERIC_MIN_DISTINCT = 20
"""auto_fields: a numeric column with more distinct values becomes log2 buckets, not a category."""


def read_source(desc: DatasetDescription, source: Source, role: str) -> pl.DataFrame | None:
    """One table with every column as read (csv/tsv: strings); None for an absent optional table."""
    path = desc.resolve(source.path)
    if not path.exists():
        if source.optional:
            return None
        raise FileNotFoundError(f"{role} file {path} does not exist (dataset {desc.name!r})")
    fmt = source.file_format
    if fmt == "parquet":
        return pl.read_parquet(path)
    sep = source.separator or ("," if fmt == "csv" else "\t")
    try:
        frame = pl.read_csv(path, separator=sep, has_header=source.has_header, new_columns=source.columns,
                            infer_schema=False, quote_char=None if fmt == "tsv" else '"')
    except pl.exceptions.PolarsError as exc:
        raise ValueError(f"{role} file {path} cannot be read as {fmt} with separator {sep!r}: {exc}") from exc
    if frame.width == 1 and (source.columns is None or len(source.columns) > 1):
        first = path.open(encoding="utf-8", errors="replace").readline()
        found = [s for s in _SEPARATORS if s != sep and s in first]
        hint = f"; its first line looks separated by {found[0]!r}: set separator: {found[0]!r}" if found else ""
        raise ValueError(f"{role} file {path} reads as a single column with separator {sep!r}{hint}")
    if frame.height == 0:
        raise ValueError(f"{role} file {path} has no rows")
    return frame


def _require(frame: pl.DataFrame, columns: list[str], role: str, path: Path) -> None:
    missing = [c for c in dict.fromkeys(columns) if c not in frame.columns]
    if missing:
        raise ValueError(f"{role} file {path} has no column(s) {missing}; its columns are {frame.columns}")


def label_values(desc: DatasetDescription, inter: pl.DataFrame) -> pl.Series:
    """0/1 labels by the description's rule; errors on unreadable or constant labels."""
    rule, column = desc.label.rule, inter.get_column(desc.label.column)
    if rule == "binary":
        values = column.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
        bad = (~values.is_in([0.0, 1.0])) | values.is_null()
        if bad.any():
            example = column.filter(bad).head(3).to_list()
            raise ValueError(f"label column {desc.label.column!r} must hold 0/1 for rule `binary`; found {example} "
                             f"in {int(bad.sum())} rows (or give a rule such as `>= 4`)")
        label = values.cast(pl.Int64)
    else:
        op, raw = desc.label.parsed()
        try:
            threshold: float | str = float(raw)
            values = numeric_values(column, f"label column {desc.label.column!r}")
        except ValueError as exc:
            if op not in ("==", "!=") or "not numbers" in str(exc) and _is_number(raw):
                raise
            threshold, values = raw.strip("'\""), column.cast(pl.String).str.strip_chars()
        if values.null_count():
            raise ValueError(f"label column {desc.label.column!r} is empty in {values.null_count()} rows")
        ops = {">=": values >= threshold, ">": values > threshold, "<=": values <= threshold,
               "<": values < threshold, "==": values == threshold, "!=": values != threshold}
        label = ops[op].cast(pl.Int64)
    if label.n_unique() < 2:
        raise ValueError(f"label column {desc.label.column!r} with rule `{rule}` gives the same label "
                         f"({label[0]}) to every row: nothing to learn; check the rule")
    return label.alias("label")


def _is_number(raw: str) -> bool:
    try:
        float(raw)
        return True
    except ValueError:
        return False


def timestamps(desc: DatasetDescription, inter: pl.DataFrame) -> pl.Series:
    """Event time in integer seconds (0 everywhere when the dataset has none)."""
    col = desc.interactions.timestamp
    if col is None:
        return pl.Series("timestamp", np.zeros(inter.height, dtype=np.int64))
    raw = inter.get_column(col)
    if raw.dtype.is_temporal():
        secs = raw.cast(pl.Datetime("us")).dt.epoch("s")
    else:
        text = raw.cast(pl.String).str.strip_chars()
        secs = text.cast(pl.Float64, strict=False).cast(pl.Int64)
        if secs.null_count() > text.null_count():
            secs = text.str.to_datetime(strict=False).dt.epoch("s")
    if secs.null_count():
        raise ValueError(f"timestamp column {col!r}: {secs.null_count()} rows are empty or not integer seconds / "
                         "ISO date-times")
    return secs.cast(pl.Int64).alias("timestamp")


def split_codes(desc: DatasetDescription, ts: pl.Series) -> np.ndarray:
    """0/1/2 per row: seeded random, or by time (ties keep file order)."""
    n, fractions = len(ts), desc.split.fractions
    if desc.split.kind == "random":
        codes = random_split(n, fractions, desc.split.seed)
    else:
        n_train, n_val, _ = split_sizes(n, fractions)
        order = np.argsort(ts.to_numpy(), kind="stable")
        codes = np.full(n, 2, dtype=np.int8)
        codes[order[:n_train]] = 0
        codes[order[n_train:n_train + n_val]] = 1
    counts = np.bincount(codes, minlength=3)
    empty = [SPLIT_NAMES[i] for i in range(3) if counts[i] == 0]
    if empty:
        raise ValueError(f"split {empty} would be empty: {n} interactions with fractions {list(fractions)}; "
                         "give more rows or larger fractions")
    return codes


def input_hash(desc: DatasetDescription, files: list[Path]) -> str:
    h = hashlib.sha256(desc.model_dump_json(exclude={"base_dir"}).encode())
    for path in files:
        h.update(path.name.encode() + sha256_file(path).encode())
    return h.hexdigest()


def build_dataset(desc: DatasetDescription, out: Path, force: bool = False) -> FeatureBuild:
    """Build (or confirm up to date) the offline store of ``desc`` under ``out``."""
    roles = {"interactions": desc.interactions, "users": desc.users, "items": desc.items}
    files = [desc.resolve(s.path) for s in roles.values() if s is not None and desc.resolve(s.path).exists()]
    key = {"builder_version": BUILDER_VERSION, "dataset": desc.name, "input_hash": input_hash(desc, files)}
    needed = [split_file(s) for s in SPLIT_NAMES] + [VOCAB_FILE, SPEC_FILE]
    if not force and _up_to_date(out, key, needed):
        return FeatureBuild(out, FeatureSpec.load(out / SPEC_FILE), skipped=True)

    tables = {role: read_source(desc, s, role) if s is not None else None for role, s in roles.items()}
    inter = tables["interactions"]
    assert inter is not None
    fields = _fields(desc, tables)
    ipath = desc.resolve(desc.interactions.path)
    _require(inter, [c for c in (desc.interactions.user, desc.interactions.item, desc.interactions.timestamp,
                                 desc.label.column) if c] + [f.source_column for f in fields if f.entity == "context"],
             "interactions", ipath)
    for role, entity in (("users", "user"), ("items", "item")):
        table, source = tables[role], roles[role]
        if table is not None and source is not None:
            _require(table, [source.key or ""] + [f.source_column for f in fields if f.entity == entity
                                                  and f.source_column != _key(desc, entity)],
                     role, desc.resolve(source.path))

    base = pl.DataFrame([timestamps(desc, inter), label_values(desc, inter)])
    for entity in ("user", "item"):
        col = _key(desc, entity)
        if col is not None:
            ids = inter.get_column(col).cast(pl.String).str.strip_chars()
            if ids.null_count():
                raise ValueError(f"interactions column {col!r} ({entity} id) is empty in {ids.null_count()} rows")
            base = base.with_columns(ids.alias(entity))
    codes = split_codes(desc, base.get_column("timestamp"))
    base = base.with_columns(pl.Series("split", codes))
    context = [f for f in fields if f.entity == "context"]
    inter_tokens = base.with_columns([field_tokens(inter.get_column(f.source_column), f).alias(f.name) for f in context])

    entities = {e: _entity_tokens(desc, e, tables[e + "s"], inter_tokens, [f for f in fields if f.entity == e])
                for e in ("user", "item") if _key(desc, e) is not None}
    train = inter_tokens.filter(pl.col("split") == 0)
    vocabs, dense_stats = {}, {}
    for f in fields:
        if f.entity == "context":
            rows = train.get_column(f.name)
        else:
            table = entities[f.entity].join(train.select(f.entity).unique(), on=f.entity, how="semi")
            rows = table.get_column(f.name)
        if f.dense:
            mean, std = rows.mean(), rows.std()
            dense_stats[f.name] = (float(mean or 0.0), float(std) if std and std > 0 else 1.0)
        else:
            vocabs[f.name] = _vocab(rows, f)
    multi = [f.name for f in fields if f.type == "multi"]
    max_lens = {f.name: f.max_len for f in fields}
    dense_exprs = [((pl.col(n) - m) / s).fill_null(0.0).fill_nan(0.0).alias(n) for n, (m, s) in dense_stats.items()]
    joined = encode_columns(inter_tokens.lazy(), vocabs, max_lens, multi).with_columns(dense_exprs).with_row_index("_row")
    encoded = {e: encode_columns(t.lazy(), vocabs, max_lens, multi).collect() for e, t in entities.items()}
    first_ts = int(base.get_column("timestamp").min() or 0)  # type: ignore[arg-type]
    stamp = datetime.fromtimestamp(first_ts, tz=timezone.utc) if desc.interactions.timestamp else NO_TIMESTAMP
    for e, table in encoded.items():
        joined = joined.join(table.lazy(), on=e, how="left")
    joined_df = joined.sort("_row").collect()  # joins do not promise to keep row order

    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    keys = [e for e in ("user", "item") if e in entities]
    columns = [*keys, "timestamp", "label", *(f.name for f in fields)]
    rows = {}
    for code, split in enumerate(SPLIT_NAMES):
        part = joined_df.filter(pl.col("split") == code).select(columns)
        rows[split] = part.height
        write_parquet(part, out / split_file(split))
    ts = pl.lit(stamp).cast(pl.Datetime("us", "UTC")).alias("event_timestamp")
    for e, name in (("user", USERS_FILE), ("item", ITEMS_FILE)):
        if e in encoded:
            write_parquet(encoded[e].with_columns(ts), out / name)
        else:
            (out / name).unlink(missing_ok=True)
    _write_text(out / VOCAB_FILE, json.dumps(vocabs, indent=1))
    spec = FeatureSpec(
        sparse=tuple(SparseFeature(f.name, len(vocabs[f.name]) + 1, f.entity, f.max_len if f.type == "multi" else 1)
                     for f in fields if not f.dense),
        dense=tuple(f.name for f in fields if f.dense),
        meta={
            "dataset": desc.name, "input_hash": key["input_hash"],
            "label_rule": f"{desc.label.column} {desc.label.rule}", "rows": rows,
            **{f"{e}s": t.height for e, t in encoded.items()},
            "positive_rate": {s: float(joined_df.filter(pl.col("split") == c).get_column("label").mean() or 0.0)  # type: ignore[arg-type]
                              for c, s in enumerate(SPLIT_NAMES)},
            "split": desc.split.model_dump(mode="json"), "event_timestamp": stamp.isoformat(),
            "dense_normalization": {n: {"mean": m, "std": s} for n, (m, s) in dense_stats.items()},
        },
    )
    spec.save(out / SPEC_FILE)
    _write_text(out / MANIFEST_FILE, json.dumps(key, indent=2) + "\n")
    return FeatureBuild(out, spec, skipped=False)


def _key(desc: DatasetDescription, entity: str) -> str | None:
    return desc.interactions.user if entity == "user" else desc.interactions.item


def _fields(desc: DatasetDescription, tables: dict[str, pl.DataFrame | None]) -> list[FieldSpec]:
    """Described fields, minus those of an absent optional table, plus auto fields."""
    fields = []
    for f in desc.fields:
        table = tables.get(f.entity + "s")
        if f.entity != "context" and table is None and f.source_column != _key(desc, f.entity):
            continue  # an absent optional table: its attributes are simply not features
        fields.append(f)
    named = {f.name for f in fields} | {f.source_column for f in fields}
    for entity in ("user", "item"):
        source, table = getattr(desc, entity + "s"), tables.get(entity + "s")
        if source is None or table is None or not source.auto_fields:
            continue
        for col in table.columns:
            if col == source.key or col in named:
                continue
            values = table.get_column(col).cast(pl.String).str.strip_chars()
            numbers = values.cast(pl.Float64, strict=False)
            if numbers.null_count() == values.null_count() and values.n_unique() > AUTO_NUMERIC_MIN_DISTINCT:
                fields.append(FieldSpec(name=col, entity=entity, type="numeric", numeric="log2"))
            elif values.n_unique() == table.height:
                continue  # text unique per row (a title): the id field already says as much
            else:
                kind = "multi" if values.str.contains("|", literal=True).any() else "categorical"
                fields.append(FieldSpec(name=col, entity=entity, type=kind))
            named.add(col)
    if not any(not f.dense for f in fields):
        raise ValueError(f"dataset {desc.name!r} has no sparse field left to train on")
    return fields


def _entity_tokens(desc: DatasetDescription, entity: str, table: pl.DataFrame | None, inter: pl.DataFrame,
                   fields: list[FieldSpec]) -> pl.DataFrame:
    """One row per entity (the table's rows plus ids only seen in interactions), one token column per field."""
    key_col = _key(desc, entity)
    source: Source | None = getattr(desc, entity + "s")
    if table is None or source is None:
        frame = inter.select(pl.col(entity)).unique(maintain_order=True)
        return frame.with_columns([pl.col(entity).alias(f.name) for f in fields])
    ids = table.get_column(source.key or "").cast(pl.String).str.strip_chars().alias(entity)
    dupes = ids.filter(ids.is_duplicated()).unique().to_list()
    if dupes:
        raise ValueError(f"{entity}s file {desc.resolve(source.path)} lists ids more than once: {sorted(dupes)[:10]}")
    columns = [ids]
    for f in fields:
        if f.source_column in (key_col, source.key):  # the id itself
            columns.append(field_tokens(ids, f).alias(f.name))
        else:
            columns.append(field_tokens(table.get_column(f.source_column), f).alias(f.name))
    frame = pl.DataFrame(columns)
    extra = inter.select(entity).unique(maintain_order=True).join(frame.select(entity), on=entity, how="anti")
    id_fields = [f.name for f in fields if f.source_column in (key_col, source.key)]
    return pl.concat([frame, extra.with_columns([pl.col(entity).alias(n) for n in id_fields])], how="diagonal")


def _vocab(tokens: pl.Series, f: FieldSpec) -> dict[str, int]:
    values = tokens.explode() if tokens.dtype == pl.List(pl.String) else tokens
    values = values.drop_nulls()
    if f.min_count > 1:
        counts = values.value_counts()
        values = counts.filter(pl.col("count") >= f.min_count).get_column(values.name)
    return build_vocab(values.to_list())
