"""The padded model input: encode_padded (gateway, one request) and encode_frame
(trainer, whole parquet splits) must build exactly the same tensors."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from features.encoding import encode_frame, encode_padded, pad_lists
from features.spec import FeatureSpec, SparseFeature

SPEC = FeatureSpec(
    sparse=(
        SparseFeature("user_id", 50, "user"),
        SparseFeature("genres", 10, "item", max_len=3),
        SparseFeature("gender", 3, "user"),
        SparseFeature("tags", 6, "item", max_len=2),
    )
)

LIST_SCHEMA = {"genres": pl.List(pl.Int64), "tags": pl.List(pl.Int64)}


def _frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [1, 49, 0, 7, 3, 12],
            "genres": [[1, 2], [], [0, 4, 0, 5], [9, 8, 7, 6, 5], None, [3, 0]],
            "gender": [1, 2, 0, 2, 1, 1],
            "tags": [[5], [0], [1, 2, 3], None, [], [4, 4]],
            "label": [0, 1, 0, 1, 1, 0],
        },
        schema_overrides=LIST_SCHEMA,
    )


def _columns(frame: pl.DataFrame) -> dict[str, list]:
    return {c: frame.get_column(c).to_list() for c in frame.columns}


def test_slot_ranges_and_total_slots() -> None:
    assert SPEC.slot_ranges() == {"user_id": (0, 1), "genres": (1, 4), "gender": (4, 5), "tags": (5, 7)}
    assert SPEC.total_slots == 7
    assert [f.multi_valued for f in SPEC.sparse] == [False, True, False, True]
    assert SPEC.names == ["user_id", "genres", "gender", "tags"]


def test_encode_padded_layout() -> None:
    ids, mask = encode_padded(SPEC, _columns(_frame()))
    assert ids.dtype == np.int64 and mask.dtype == np.float32
    assert ids.shape == mask.shape == (6, 7)
    expected_ids = np.array(
        [
            [1, 1, 2, 0, 1, 5, 0],
            [49, 0, 0, 0, 2, 0, 0],  # empty list; [0] -> zeros dropped
            [0, 4, 5, 0, 0, 1, 2],  # unknown single-valued id 0 keeps mask 1; zeros inside the list dropped; truncated
            [7, 9, 8, 7, 2, 0, 0],  # longer than max_len: first max_len kept; null list
            [3, 0, 0, 0, 1, 0, 0],  # null list; empty list
            [12, 3, 0, 0, 1, 4, 4],
        ]
    )
    expected_mask = np.array(
        [
            [1, 1, 1, 0, 1, 1, 0],
            [1, 0, 0, 0, 1, 0, 0],
            [1, 1, 1, 0, 1, 1, 1],
            [1, 1, 1, 1, 1, 0, 0],
            [1, 0, 0, 0, 1, 0, 0],
            [1, 1, 0, 0, 1, 1, 1],
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(mask, expected_mask)
    # padding slots hold id 0
    assert (ids[mask == 0] == 0).all()


def test_encode_frame_equals_encode_padded() -> None:
    frame = _frame()
    ids_f, mask_f = encode_frame(SPEC, frame)
    ids_p, mask_p = encode_padded(SPEC, _columns(frame))
    assert ids_f.dtype == ids_p.dtype and mask_f.dtype == mask_p.dtype
    np.testing.assert_array_equal(ids_f, ids_p)
    np.testing.assert_array_equal(mask_f, mask_p)


def test_encode_frame_equals_encode_padded_random() -> None:
    rng = np.random.default_rng(0)
    n = 500

    def random_list(vocab: int) -> list[int] | None:
        if rng.random() < 0.1:
            return None
        return [int(v) for v in rng.integers(0, vocab, rng.integers(0, 6))]

    frame = pl.DataFrame(
        {
            "user_id": rng.integers(0, 50, n),
            "genres": [random_list(10) for _ in range(n)],
            "gender": rng.integers(0, 3, n),
            "tags": [random_list(6) for _ in range(n)],
        },
        schema_overrides=LIST_SCHEMA,
    )
    ids_f, mask_f = encode_frame(SPEC, frame)
    ids_p, mask_p = encode_padded(SPEC, _columns(frame))
    np.testing.assert_array_equal(ids_f, ids_p)
    np.testing.assert_array_equal(mask_f, mask_p)
    # the data really exercised the edge cases
    genres = frame.get_column("genres").to_list()
    assert any(g is None for g in genres) and any(g == [] for g in genres)
    assert any(g and len([v for v in g if v]) > 3 for g in genres) and any(g and 0 in g for g in genres)


def test_encode_frame_single_valued_null_is_unknown() -> None:
    frame = pl.DataFrame({"user_id": [4, None], "genres": [[1], [2]], "gender": [None, 1], "tags": [[1], [2]]},
                         schema_overrides=LIST_SCHEMA | {"user_id": pl.Int64, "gender": pl.Int64})
    ids, mask = encode_frame(SPEC, frame)
    np.testing.assert_array_equal(ids[:, 0], [4, 0])
    np.testing.assert_array_equal(ids[:, 4], [0, 1])
    np.testing.assert_array_equal(mask[:, [0, 4]], np.ones((2, 2), dtype=np.float32))


def test_encode_padded_accepts_numpy_columns() -> None:
    cols = {"user_id": np.array([3, 4]), "genres": [[1], [2, 3]], "gender": np.array([1, 2]), "tags": [np.array([5]), []]}
    ids, mask = encode_padded(SPEC, cols)
    np.testing.assert_array_equal(ids, [[3, 1, 0, 0, 1, 5, 0], [4, 2, 3, 0, 2, 0, 0]])
    np.testing.assert_array_equal(mask.sum(axis=1), [4, 4])


def test_pad_lists() -> None:
    ids, mask = pad_lists([[3, 0, 1], None, [], [1, 2, 3, 4]], 3)
    np.testing.assert_array_equal(ids, [[3, 1, 0], [0, 0, 0], [0, 0, 0], [1, 2, 3]])
    np.testing.assert_array_equal(mask, [[1, 1, 0], [0, 0, 0], [0, 0, 0], [1, 1, 1]])


@pytest.mark.parametrize(
    "column,value,name",
    [("user_id", 50, "user_id"), ("gender", 3, "gender"), ("genres", [1, 10], "genres"), ("tags", [6], "tags")],
)
def test_encode_padded_out_of_vocabulary_names_the_feature(column: str, value, name: str) -> None:
    cols = _columns(_frame())
    cols[column] = list(cols[column])
    cols[column][1] = value
    with pytest.raises(ValueError, match=name):
        encode_padded(SPEC, cols)


def test_encode_padded_negative_ids() -> None:
    cols = _columns(_frame())
    cols["user_id"][0] = -1
    with pytest.raises(ValueError, match="negative"):
        encode_padded(SPEC, cols)


def test_encode_padded_missing_column_and_ragged_rows() -> None:
    cols = _columns(_frame())
    del cols["tags"]
    with pytest.raises(KeyError, match="tags"):
        encode_padded(SPEC, cols)
    cols = _columns(_frame())
    cols["gender"] = cols["gender"][:-1]
    with pytest.raises(ValueError, match="gender"):
        encode_padded(SPEC, cols)


# encode_frame feeds the trainer; an id beyond a table's vocabulary must be
# rejected there too rather than reach the embedding lookup.


@pytest.mark.parametrize(
    "column,value,name",
    [("user_id", 50, "user_id"), ("gender", 3, "gender"), ("genres", [1, 10], "genres"), ("tags", [6], "tags")],
)
def test_encode_frame_out_of_vocabulary_names_the_feature(column: str, value, name: str) -> None:
    frame = _frame()
    values = frame.get_column(column).to_list()
    values[1] = value
    frame = frame.with_columns(pl.Series(column, values, dtype=frame.schema[column]))
    with pytest.raises(ValueError, match=name):
        encode_frame(SPEC, frame)


def test_encode_frame_missing_column_raises_key_error() -> None:
    with pytest.raises(KeyError, match="tags"):
        encode_frame(SPEC, _frame().drop("tags"))


@pytest.mark.parametrize("column,value", [("user_id", -2), ("genres", [1, -3])])
def test_encode_frame_negative_ids(column: str, value) -> None:
    frame = _frame()
    values = frame.get_column(column).to_list()
    values[0] = value
    frame = frame.with_columns(pl.Series(column, values, dtype=frame.schema[column]))
    with pytest.raises(ValueError, match="negative"):
        encode_frame(SPEC, frame)


def test_encode_padded_single_valued_null_is_unknown_like_encode_frame() -> None:
    frame = pl.DataFrame({"user_id": [4, None], "genres": [[1], None], "gender": [None, 1], "tags": [[], [2]]},
                         schema_overrides=LIST_SCHEMA | {"user_id": pl.Int64, "gender": pl.Int64})
    ids_p, mask_p = encode_padded(SPEC, _columns(frame))
    ids_f, mask_f = encode_frame(SPEC, frame)
    np.testing.assert_array_equal(ids_p, ids_f)
    np.testing.assert_array_equal(mask_p, mask_f)
