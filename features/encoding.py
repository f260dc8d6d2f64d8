"""Turn encoded feature columns into the exported model's padded inputs.

One function serves the trainer (whole parquet splits), the export parity
check and the gateway (one request), so the three can never disagree on the
input layout described in features/spec.py. NumPy only: no torch here.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from features.spec import FeatureSpec


def pad_lists(rows: Sequence[Sequence[int] | None], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Ragged id lists -> ([n, max_len] int64 ids, [n, max_len] float32 mask).

    Ids of 0 (unknown) are dropped, lists longer than ``max_len`` are
    truncated, and None counts as an empty list.
    """
    n = len(rows)
    ids = np.zeros((n, max_len), dtype=np.int64)
    mask = np.zeros((n, max_len), dtype=np.float32)
    for r, row in enumerate(rows):
        if not row:
            continue
        kept = [int(v) for v in row if v][:max_len]
        ids[r, : len(kept)] = kept
        mask[r, : len(kept)] = 1.0
    return ids, mask


def encode_padded(spec: FeatureSpec, columns: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Encoded columns (name -> values per row) -> (sparse_ids, sparse_mask).

    Single-valued features always occupy their slot with mask 1 (id 0 is the
    learned "unknown" embedding); multi-valued features are padded lists.
    """
    missing = [f.name for f in spec.sparse if f.name not in columns]
    if missing:
        raise KeyError(f"missing feature columns {missing}")
    n = len(columns[spec.sparse[0].name])
    ids = np.zeros((n, spec.total_slots), dtype=np.int64)
    mask = np.zeros((n, spec.total_slots), dtype=np.float32)
    for f, (start, end) in zip(spec.sparse, spec.slot_ranges().values()):
        col = columns[f.name]
        if len(col) != n:
            raise ValueError(f"column {f.name!r} has {len(col)} rows, expected {n}")
        if f.multi_valued:
            ids[:, start:end], mask[:, start:end] = pad_lists(col, f.max_len)
        else:
            ids[:, start] = np.asarray([0 if v is None else v for v in col], dtype=np.int64)
            mask[:, start] = 1.0
    _check_ids(spec, ids)
    return ids, mask


def _check_ids(spec: FeatureSpec, ids: np.ndarray) -> None:
    """Every id must lie in [0, vocab_size) of its feature."""
    slot_names = [f.name for f in spec.sparse for _ in range(f.max_len)]
    out_of_range = ids >= np.array([f.vocab_size for f in spec.sparse for _ in range(f.max_len)])
    if out_of_range.any():
        name = slot_names[int(np.argwhere(out_of_range)[0][1])]
        raise ValueError(f"feature {name!r} has ids beyond its vocabulary ({spec.feature(name).vocab_size})")
    if (ids < 0).any():
        name = slot_names[int(np.argwhere(ids < 0)[0][1])]
        raise ValueError(f"feature {name!r} has negative ids")


def encode_frame(spec: FeatureSpec, frame: Any) -> tuple[np.ndarray, np.ndarray]:
    """Same as encode_padded for a polars DataFrame (vectorised list padding)."""
    import polars as pl

    missing = [f.name for f in spec.sparse if f.name not in frame.columns]
    if missing:
        raise KeyError(f"missing feature columns {missing}")

    columns: dict[str, Any] = {}
    for f in spec.sparse:
        if f.multi_valued:
            series = frame.get_column(f.name)
            lists = series.cast(pl.List(pl.Int64)).list.eval(pl.element().filter(pl.element() != 0)).list.head(f.max_len)
            padded = np.zeros((len(series), f.max_len), dtype=np.int64)
            lengths = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
            flat = lists.explode().drop_nulls().to_numpy().astype(np.int64)
            rows = np.repeat(np.arange(len(series)), lengths)
            pos = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            padded[rows, pos] = flat
            columns[f.name] = padded
        else:
            columns[f.name] = frame.get_column(f.name).fill_null(0).to_numpy()
    # multi-valued columns are already padded arrays: rebuild the mask from them
    n = frame.height
    ids = np.zeros((n, spec.total_slots), dtype=np.int64)
    mask = np.zeros((n, spec.total_slots), dtype=np.float32)
    for f, (start, end) in zip(spec.sparse, spec.slot_ranges().values()):
        if f.multi_valued:
            ids[:, start:end] = columns[f.name]
            mask[:, start:end] = (columns[f.name] != 0).astype(np.float32)
        else:
            ids[:, start] = columns[f.name]
            mask[:, start] = 1.0
    _check_ids(spec, ids)
    return ids, mask
