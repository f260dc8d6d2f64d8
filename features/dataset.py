"""Dataset descriptions: what a user writes (YAML) to train and serve on their own data.

A description names the source files, the label rule, the fields and the
split; ``features.builder`` turns it into the same offline store the
MovieLens pipeline writes (parquet splits, entity tables, vocabularies,
``spec.json``), so training, export, the Feast repository and the gateway
work on it unchanged. Example (every key is documented on the models below)::

    name: shop
    interactions: {path: ratings.csv, user: user_id, item: item_id, timestamp: ts}
    items: {path: items.csv, key: item_id}
    users: {path: users.csv, key: user_id, optional: true}
    label: {column: rating, rule: ">= 4"}
    fields:
      - {name: user_id, entity: user}
      - {name: item_id, entity: item}
      - {name: genres, entity: item, type: multi, separator: "|", max_len: 6}
      - {name: age, entity: user, type: numeric, numeric: buckets, boundaries: [18, 25, 35, 50]}
    split: {kind: random, fractions: [0.8, 0.1, 0.1], seed: 2019}

Paths are relative to the description file (built-in descriptions: to
``settings.data.dir``); ``package:PKG/REL/PATH`` names a file shipped inside an
installed Python package. User and item fields come from the ``users`` /
``items`` tables (their key column is the id itself); context fields come from
the interactions. A table marked ``optional`` that is absent drops its fields:
a dataset without user demographics simply has no such fields.
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

BUILTIN_DIR = Path(__file__).parent / "datasets"
MOVIELENS = "movielens-100k"
"""Built by features/pipeline.py from the recbole copy (its own reader and schema)."""

_RULE = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*(.+?)\s*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(_Strict):
    path: str
    """File path (relative to the description), or ``package:PKG/REL/PATH``."""
    format: Literal["csv", "tsv", "parquet"] | None = None
    """Default from the suffix: .csv -> csv, .tsv/.txt -> tsv, .parquet -> parquet."""
    separator: str | None = None
    """Field separator of csv/tsv files (default "," for csv, a tab for tsv)."""
    has_header: bool = True
    columns: list[str] | None = None
    """Column names when the file has no header (e.g. the Criteo TSV)."""
    key: str | None = None
    """Entity tables: the id column (joins the interactions' user/item column)."""
    optional: bool = False
    """An absent optional table is no error: its fields are dropped."""
    auto_fields: bool = False
    """Entity tables: every non-key column becomes a categorical field of the entity
    (multi-valued on "|" when a value holds one). Explicit ``fields`` win."""

    @model_validator(mode="after")
    def _check(self) -> "Source":
        if not self.has_header and not self.columns:
            raise ValueError(f"{self.path}: has_header is false, so list the column names in `columns`")
        if self.separator is not None and len(self.separator) != 1:
            raise ValueError(f"{self.path}: separator must be one character, got {self.separator!r}")
        return self

    @property
    def file_format(self) -> str:
        if self.format:
            return self.format
        suffix = Path(self.path.split(":", 1)[-1]).suffix.lower()
        formats = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".parquet": "parquet", ".pq": "parquet"}
        if suffix not in formats:
            raise ValueError(f"{self.path}: cannot tell the format from {suffix!r}; set format: csv|tsv|parquet")
        return formats[suffix]


class Interactions(Source):
    user: str | None = None
    """User id column (needed to serve through Feast)."""
    item: str | None = None
    """Item id column (needed to serve through Feast)."""
    timestamp: str | None = None
    """Event time: integer seconds or an ISO date-time; needed by ``split: {kind: time}``."""


class LabelRule(_Strict):
    column: str
    rule: str = "binary"
    """``binary`` (the column holds 0/1) or a comparison such as ``>= 4``, ``> 0``, ``== click``."""

    @model_validator(mode="after")
    def _check(self) -> "LabelRule":
        if self.rule != "binary" and not _RULE.match(self.rule):
            raise ValueError(f"label rule {self.rule!r}: use `binary` or an operator (>=, >, <=, <, ==, !=) and a value")
        return self

    def parsed(self) -> tuple[str, str]:
        match = _RULE.match(self.rule)
        assert match is not None
        return match.group(1), match.group(2)


class FieldSpec(_Strict):
    name: str
    entity: Literal["user", "item", "context"] = "context"
    column: str | None = None
    """Source column (default: ``name``; for a user/item field, the table's key gives the id)."""
    type: Literal["categorical", "multi", "numeric"] = "categorical"
    separator: str = "|"
    """Multi-valued fields: separator inside a value (ignored for list-typed parquet columns)."""
    max_len: int = Field(default=6, ge=1)
    """Multi-valued fields: slots in the model input (first values kept)."""
    numeric: Literal["log_squared", "log2", "buckets", "normalize"] = "log_squared"
    """Numeric fields: ``log_squared`` (floor(ln(v)^2) for v > 2, own token below: the Criteo
    winners' rule), ``log2`` (floor(log2(1 + v))), ``buckets`` (``boundaries``), or
    ``normalize`` (a dense z-scored input, context fields only)."""
    boundaries: list[float] = []
    min_count: int = Field(default=1, ge=1)
    """Tokens seen fewer times in the training rows map to 0 (unknown)."""
    missing: Literal["unknown", "token"] = "unknown"
    """An empty value is unknown (id 0), or a token of its own (Criteo)."""

    @property
    def source_column(self) -> str:
        return self.column or self.name

    @property
    def dense(self) -> bool:
        return self.type == "numeric" and self.numeric == "normalize"

    @model_validator(mode="after")
    def _check(self) -> "FieldSpec":
        if self.type == "numeric" and self.numeric == "buckets" and not self.boundaries:
            raise ValueError(f"field {self.name!r}: numeric: buckets needs `boundaries`")
        if self.boundaries and self.boundaries != sorted(set(self.boundaries)):
            raise ValueError(f"field {self.name!r}: boundaries must be strictly increasing")
        if self.dense and self.entity != "context":
            raise ValueError(
                f"field {self.name!r}: numeric: normalize makes a dense input, which the gateway does not read "
                "from Feast; use log2, log_squared or buckets for user/item fields")
        return self


class SplitSpec(_Strict):
    kind: Literal["random", "time"] = "random"
    """``random``: seeded permutation; ``time``: oldest rows train, newest test."""
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 2019


class DatasetDescription(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    interactions: Interactions
    users: Source | None = None
    items: Source | None = None
    label: LabelRule
    fields: list[FieldSpec] = []
    split: SplitSpec = SplitSpec()
    base_dir: Path = Field(default=Path("."), exclude=True)
    """Where relative paths start (set by the loader, not written in the YAML)."""

    @model_validator(mode="after")
    def _check(self) -> "DatasetDescription":
        names = [f.name for f in self.fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"field names must be unique: {dupes}")
        reserved = {"user", "item", "timestamp", "label", "split", "event_timestamp"} & set(names)
        if reserved:
            raise ValueError(f"field names {sorted(reserved)} are reserved for the output tables; rename them")
        for entity in ("users", "items"):
            table: Source | None = getattr(self, entity)
            if table is not None and not table.key:
                raise ValueError(f"{entity}: give its id column as `key`")
        for f in self.fields:
            key = self.interactions.user if f.entity == "user" else self.interactions.item
            table = self.users if f.entity == "user" else self.items
            if f.entity != "context" and key is None:
                raise ValueError(f"field {f.name!r} is a {f.entity} field but interactions names no {f.entity} column")
            if f.entity != "context" and table is None and f.source_column not in (key,):
                raise ValueError(
                    f"field {f.name!r}: {f.entity} attributes come from the {f.entity}s table, which is not "
                    f"described; add `{f.entity}s: {{path: ..., key: ...}}` or make the field the id "
                    f"(column: {key})")
        if self.split.kind == "time" and not self.interactions.timestamp:
            raise ValueError("split kind `time` needs interactions.timestamp")
        if not self.fields and not any(t is not None and t.auto_fields for t in (self.users, self.items)):
            raise ValueError("describe at least one field (or set auto_fields on the users/items table)")
        return self

    def resolve(self, path: str) -> Path:
        """A source path as a file on disk (package resources included)."""
        if path.startswith("package:"):
            package, _, rel = path[len("package:"):].partition("/")
            return Path(str(importlib.resources.files(package).joinpath(rel)))
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p


def builtin_names() -> list[str]:
    return sorted([MOVIELENS, *(p.stem for p in BUILTIN_DIR.glob("*.yaml"))])


def load_description(name_or_file: str | Path, data_dir: Path) -> DatasetDescription:
    """A built-in dataset by name (paths under ``data_dir``) or a YAML description file."""
    path = Path(name_or_file)
    builtin = BUILTIN_DIR / f"{name_or_file}.yaml"
    if path.suffix.lower() in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise FileNotFoundError(f"dataset description {path} does not exist")
        base = path.resolve().parent
    elif builtin.exists():
        path, base = builtin, Path(data_dir)
    else:
        raise ValueError(f"unknown dataset {name_or_file!r}: give a YAML description file or one of {builtin_names()}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a dataset description is a mapping (name, interactions, label, fields, ...)")
    try:
        return DatasetDescription(**raw, base_dir=base)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'description'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{path}: invalid dataset description: {problems}") from None
