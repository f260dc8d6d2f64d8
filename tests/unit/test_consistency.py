"""Training-serving consistency: the logged features of an exposure, flattened and compared per feature."""

from __future__ import annotations

import polars as pl
import pytest

from recast.consistency import logged_rows, mismatches
from streaming.events import ExposureV1, InvalidEvent, ShownItem, decode, encode


def _exposure(items=("1", "2"), clicks=(3, 3), recent=(5, 4)) -> ExposureV1:
    return ExposureV1(event_id="e", ts_ms=1_000, request_id="r", user="u", model="dlf", model_version="1",
                      items=[ShownItem(item=i, position=k, score=0.5) for k, i in enumerate(items, 1)],
                      features={"user": {"clicks_1h_bucket": 4, "recent_items": list(recent)},
                                "items": {"item_clicks_1h_bucket": list(clicks)}})


def test_logged_features_round_trip_and_need_one_value_per_shown_item():
    event = _exposure()
    assert decode(encode(event), expect="exposure") == event
    with pytest.raises(ValueError, match="one value per shown item"):
        _exposure(clicks=(3,))
    with pytest.raises(InvalidEvent):
        decode(encode(event).replace(b'"clicks_1h_bucket":4', b'"clicks_1h_bucket":"4"'), expect="exposure")


def test_rows_per_shown_item_and_mismatch_rates():
    rows, names = logged_rows([_exposure(), _exposure().model_copy(update={"features": None})])
    assert rows.height == 2 and set(names) == {"clicks_1h_bucket", "recent_items", "item_clicks_1h_bucket"}
    assert rows["logged:item_clicks_1h_bucket"].to_list() == [3, 3]
    built = pl.DataFrame({"clicks_1h_bucket": [4, 4], "recent_items": [[5, 4], [5]], "item_clicks_1h_bucket": [3, 3]})
    report = mismatches(rows, built, names)
    assert report["clicks_1h_bucket"]["rate"] == 0 and report["item_clicks_1h_bucket"]["mismatches"] == 0
    assert report["recent_items"] == {"rows": 2, "mismatches": 1, "rate": 0.5, "examples": [
        {"user": "u", "item": "2", "ts_ms": 1_000, "served": [5, 4], "training": [5]}]}
