"""Raw column values -> string tokens, per field type of a dataset description.

Tokens are what the vocabularies map to ids (0 = unknown); null stays
unknown unless the field asks for a ``missing`` token of its own. Numeric
rules:

* ``log_squared``: ``v > 2`` -> ``b<floor(ln(v)^2)>``, other values keep their
  own token ``v<value>`` (the Criteo "3 Idiots" rule, as features/criteo.py).
* ``log2``: ``b<floor(log2(1 + v))>`` for ``v >= 0``, ``neg`` below.
* ``buckets``: ``b<i>`` where i = number of boundaries <= v.
* ``normalize``: the Float64 value itself (z-scored later with train statistics).
"""

from __future__ import annotations

import polars as pl

from features.dataset import FieldSpec

MISSING = "__missing__"


def numeric_values(column: pl.Series, what: str) -> pl.Series:
    """Float64 values; empty -> null; anything else that is not a number is an error."""
    if column.dtype.is_numeric():
        return column.cast(pl.Float64)
    text = column.cast(pl.String).str.strip_chars()
    text = pl.Series(text.name, text).replace("", None)
    values = text.cast(pl.Float64, strict=False)
    bad = values.is_null() & text.is_not_null()
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum())} values are not numbers, e.g. {text.filter(bad).head(3).to_list()}")
    return values


def _number_token(v: pl.Expr) -> pl.Expr:
    """Integral values print without a fraction (3.0 -> "3") so they match integer columns."""
    return pl.when(v == v.floor()).then(v.cast(pl.Int64).cast(pl.String)).otherwise(v.cast(pl.String))


def numeric_tokens(values: pl.Series, f: FieldSpec) -> pl.Series:
    frame = pl.DataFrame({"v": values})
    v = pl.col("v")
    if f.numeric == "log_squared":
        expr = (pl.when(v > 2).then(pl.lit("b") + (v.log() ** 2).floor().cast(pl.Int64).cast(pl.String))
                .otherwise(pl.lit("v") + _number_token(v)))
    elif f.numeric == "log2":
        expr = pl.when(v < 0).then(pl.lit("neg")).otherwise(
            pl.lit("b") + (v + 1).log(2).floor().cast(pl.Int64).cast(pl.String))
    else:
        index = pl.sum_horizontal([(v >= b).cast(pl.Int64) for b in f.boundaries])
        expr = pl.lit("b") + index.cast(pl.String)
    return frame.select(pl.when(v.is_null()).then(pl.lit(None, pl.String)).otherwise(expr)).to_series()


def field_tokens(column: pl.Series, f: FieldSpec) -> pl.Series:
    """Tokens of one field: String (categorical, numeric), List(String) (multi), Float64 (normalize)."""
    what = f"field {f.name!r} (column {f.source_column!r})"
    if f.type == "numeric":
        values = numeric_values(column, what)
        if f.dense:
            return values
        tokens = numeric_tokens(values, f)
    elif f.type == "multi":
        if isinstance(column.dtype, pl.List):
            lists = column.cast(pl.List(pl.String))
        else:
            lists = column.cast(pl.String).str.split(f.separator)
        lists = lists.list.eval(pl.element().str.strip_chars()).list.eval(pl.element().filter(pl.element() != ""))
        if f.missing == "token":
            col = pl.col(lists.name)
            lists = lists.to_frame().select(pl.when(col.list.len().fill_null(0) == 0)
                                            .then(pl.lit([MISSING], dtype=pl.List(pl.String))).otherwise(col)).to_series()
        return lists.fill_null(pl.lit([], dtype=pl.List(pl.String)))
    else:
        tokens = column.cast(pl.String).str.strip_chars()
        tokens = pl.Series(tokens.name, tokens).replace("", None)
    return tokens.fill_null(MISSING) if f.missing == "token" else tokens
