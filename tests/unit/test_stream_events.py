"""Event schemas: typed, versioned, validated on both ends, with DLQ reason codes."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from streaming.events import (
    REGISTRY,
    ExposureV1,
    InteractionV1,
    InvalidEvent,
    OutcomeV1,
    ShownItem,
    decode,
    encode,
    key_of,
    parse_json_schema,
)


def click(**kw) -> InteractionV1:
    return InteractionV1(**{"event_id": "e1", "ts_ms": 1_700_000_000_000, "type": "click", "user": "196",
                            "item": "242", **kw})


def test_round_trip_every_kind() -> None:
    events = [
        click(),
        InteractionV1(event_id="e2", ts_ms=5, type="purchase", user="u", item="i", price=12.5, currency="EUR"),
        ExposureV1(event_id="x", ts_ms=7, request_id="r1", user="u", model="dlf", model_version="3",
                   items=[ShownItem(item="a", position=1, score=0.9), ShownItem(item="b", position=2, score=0.1)],
                   experiment="exp", variant="B"),
        OutcomeV1(event_id="o", ts_ms=9, request_id="r1", user="u", item="a", type="click"),
    ]
    for e in events:
        raw = encode(e)
        assert json.loads(raw)["kind"] == e.kind and json.loads(raw)["v"] == 1
        assert decode(raw) == e
        assert key_of(e) == e.user.encode()


def test_producer_side_validation() -> None:
    with pytest.raises(ValidationError, match="purchase needs price"):
        InteractionV1(event_id="e", ts_ms=1, type="purchase", user="u", item="i")
    with pytest.raises(ValidationError, match="carries no price"):
        click(price=3.0, currency="EUR")
    with pytest.raises(ValidationError):
        InteractionV1(event_id="e", ts_ms=1, type="purchase", user="u", item="i", price=-1.0, currency="EUR")
    with pytest.raises(ValidationError):
        InteractionV1(event_id="e", ts_ms=1, type="purchase", user="u", item="i", price=1.0, currency="euro")
    with pytest.raises(ValidationError):
        click(type="like")
    with pytest.raises(ValidationError):
        click(ts_ms="1700000000000")  # strict: no string coercion
    with pytest.raises(ValidationError, match="distinct"):
        ExposureV1(event_id="x", ts_ms=7, request_id="r", user="u", model="m", model_version="1",
                   items=[ShownItem(item="a", position=1, score=0.0), ShownItem(item="b", position=1, score=0.0)])


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (None, "empty"),
        (b"{not json", "not_json"),
        (b"\xff\xfe", "not_json"),
        (b"[1, 2]", "not_an_object"),
        (b'{"user": "1"}', "missing_envelope"),
        (b'{"kind": "rating", "v": 1}', "unknown_kind"),
        (b'{"kind": "interaction", "v": 2, "event_id": "e"}', "unsupported_version"),
        (b'{"kind": "interaction", "v": "1"}', "unsupported_version"),
        (b'{"kind": "interaction", "v": 1, "event_id": "e", "ts_ms": 1, "type": "click", "user": "u"}',
         "schema_violation"),
        (b'{"kind": "interaction", "v": 1, "event_id": "e", "ts_ms": -5, "type": "click", "user": "u", "item": "i"}',
         "schema_violation"),
        (b'{"kind": "interaction", "v": 1, "event_id": "e", "ts_ms": 1, "type": "click", "user": "u", "item": "i",'
         b' "extra": 1}', "schema_violation"),
        (b'{"kind": "interaction", "v": 1, "event_id": "e", "ts_ms": 1, "type": "click", "user": "", "item": "i"}',
         "schema_violation"),
    ],
)
def test_consumer_side_reasons(raw, reason) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode(raw)
    assert info.value.reason == reason
    assert info.value.detail


def test_unexpected_kind_for_the_topic() -> None:
    outcome = OutcomeV1(event_id="o", ts_ms=9, request_id="r", user="u", item="a", type="click")
    with pytest.raises(InvalidEvent) as info:
        decode(encode(outcome), expect="interaction")
    assert info.value.reason == "unexpected_kind"
    assert decode(encode(click()), expect="interaction") == click()


def test_registry_and_json_schemas() -> None:
    schemas = parse_json_schema()
    assert set(schemas) == {f"{k}.v{v}" for k, v in REGISTRY}
    assert "price" in schemas["interaction.v1"]["properties"]


def test_fast_path_still_requires_the_envelope() -> None:
    body = json.loads(encode(click()))
    for missing in ("kind", "v"):
        raw = json.dumps({k: v for k, v in body.items() if k != missing}).encode()
        with pytest.raises(InvalidEvent) as info:
            decode(raw, expect="interaction")
        assert info.value.reason == "missing_envelope"


def interaction_bytes(**overrides) -> bytes:
    body = {"kind": "interaction", "v": 1, "event_id": "e", "ts_ms": 1, "type": "click", "user": "u", "item": "i"}
    return json.dumps({**body, **overrides}).encode()


@pytest.mark.parametrize("expect", [None, "interaction"])  # the slow path and the fast path agree
@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[" * 5000 + b"]" * 5000, "too_deep"),
        (b'{"kind": "interaction", "v": 1, "event_id": ' + b"[" * 3000 + b"]" * 3000 + b"}", "too_deep"),
        (b'{"kind": ' + b'{"a": ' * 2000 + b"1" + b"}" * 2000 + b', "v": 1}', "too_deep"),
        (interaction_bytes(v=True), "unsupported_version"),
        (interaction_bytes(v=1.0), "unsupported_version"),
        (interaction_bytes(v=[1]), "unsupported_version"),
        (interaction_bytes(kind=["interaction"]), "unknown_kind"),
        (interaction_bytes(kind={"x": 1}), "unknown_kind"),
        (b'{"kind": "interaction", "v": 1, "ts_ms": ' + b"9" * 5000 + b"}", "not_json"),
        (b"1" * 5000, "not_json"),
        (interaction_bytes(user="x" * 10_000), "schema_violation"),
        (b"x" * ((1 << 20) + 1), "too_large"),
    ],
)
def test_hostile_messages_get_a_reason_never_an_exception(raw, reason, expect) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode(raw, expect=expect)
    assert info.value.reason == reason
    assert len(info.value.detail) <= 600


def test_any_failure_inside_the_decoder_is_a_reason(monkeypatch) -> None:
    import streaming.events as events

    def broken(*_a, **_k):
        raise MemoryError("no room")

    monkeypatch.setattr(events.json, "loads", broken)
    with pytest.raises(InvalidEvent) as info:
        decode(b'{"kind": "interaction"}')
    assert info.value.reason == "undecodable" and "MemoryError" in info.value.detail
