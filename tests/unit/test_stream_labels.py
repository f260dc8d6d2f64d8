"""The attribution join: exposures x outcomes inside a window -> labelled examples."""

from __future__ import annotations

import pytest

from streaming.events import ExposureV1, OutcomeV1, ShownItem
from streaming.labels import exposures_frame, label_examples, outcomes_frame

MIN = 60_000


def exposure(rid: str, user: str, items: list[str], ts: int, **kw) -> ExposureV1:
    return ExposureV1(event_id=f"x-{rid}-{ts}", ts_ms=ts, request_id=rid, user=user, model="dlf", model_version="1",
                      items=[ShownItem(item=i, position=p, score=1.0 / p) for p, i in enumerate(items, 1)], **kw)


def outcome(eid: str, rid: str, user: str, item: str, ts: int, type_: str = "click", price=None) -> OutcomeV1:
    extra = {"price": price, "currency": "EUR"} if type_ == "purchase" else {}
    return OutcomeV1(event_id=eid, ts_ms=ts, request_id=rid, user=user, item=item, type=type_, **extra)


def test_attribution_window_join() -> None:
    t = 1_000_000_000
    exposures = [
        exposure("r1", "u1", ["a", "b", "c"], t, experiment="e", variant="B"),
        exposure("r1", "u1", ["a", "b", "c"], t),  # duplicate delivery of the same exposure
        exposure("r2", "u2", ["a", "d"], t + MIN),
    ]
    outcomes = [
        outcome("o1", "r1", "u1", "a", t + 5 * MIN),                     # inside: click
        outcome("o1", "r1", "u1", "a", t + 5 * MIN),                     # duplicate delivery
        outcome("o2", "r1", "u1", "b", t + 31 * MIN),                    # outside the 30 min window
        outcome("o3", "r1", "u1", "c", t + 2 * MIN, "purchase", 20.0),   # purchase counts as click too
        outcome("o4", "r1", "u1", "c", t + 3 * MIN, "purchase", 5.0),
        outcome("o5", "r2", "u1", "a", t + 2 * MIN),                     # another user: not attributed
        outcome("o6", "r2", "u2", "z", t + 2 * MIN),                     # item not shown: ignored
        outcome("o7", "r2", "u2", "d", t - MIN),                         # before the exposure: ignored
    ]
    labels = label_examples(exposures_frame(exposures), outcomes_frame(outcomes), window_ms=30 * MIN)
    rows = {(r["request_id"], r["item"]): r for r in labels.iter_rows(named=True)}
    assert labels.height == 5 and list(rows) == [("r1", "a"), ("r1", "b"), ("r1", "c"), ("r2", "a"), ("r2", "d")]
    assert [rows[k]["label"] for k in rows] == [1, 0, 1, 0, 0]
    assert rows[("r1", "c")]["purchased"] == 1 and rows[("r1", "c")]["revenue"] == pytest.approx(25.0)
    assert rows[("r1", "c")]["currency"] == "EUR" and rows[("r1", "a")]["currency"] is None
    assert rows[("r1", "a")]["first_outcome_ms"] == t + 5 * MIN
    assert rows[("r1", "a")]["position"] == 1 and rows[("r1", "a")]["variant"] == "B"
    assert rows[("r1", "b")]["revenue"] == 0.0
    wider = label_examples(exposures_frame(exposures), outcomes_frame(outcomes), window_ms=60 * MIN)
    assert wider.filter(wider["item"] == "b")["label"].to_list() == [1]


def test_empty_inputs() -> None:
    labels = label_examples(exposures_frame([]), outcomes_frame([]), window_ms=MIN)
    assert labels.height == 0 and "label" in labels.columns
    with pytest.raises(ValueError):
        label_examples(exposures_frame([]), outcomes_frame([]), window_ms=-1)


def test_a_cancelled_metadata_refresh_is_not_logged_as_an_error(caplog) -> None:
    """Closing a short-lived client mid-refresh is no failure; a real refresh failure still shows."""
    import logging

    import kafka.errors as errors

    import streaming.topics  # noqa: F401  (installs the filter)

    cluster = logging.getLogger("kafka.cluster")
    with caplog.at_level(logging.ERROR, logger="kafka.cluster"):
        cluster.error("Metadata refresh: failed %s", errors.Cancelled())
        cluster.error("Metadata refresh: failed %s", errors.KafkaConnectionError("broker gone"))
    assert [r.getMessage() for r in caplog.records] == ["Metadata refresh: failed KafkaConnectionError: broker gone"]
