"""The online writer's direct protobuf encoders write exactly protobuf's bytes, and the Redis
commands it packs itself are exactly the wire protocol (streaming/online_write.py, redis_wire.py).

The encoders are built on first use, not at collection: building them imports Feast, which
switches prometheus_client to multi-process mode for the rest of the session (the processors of
the tests collected after this module would then share their counters)."""

from __future__ import annotations

from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.online_write import _protobuf_encoders, _varint, _varint_slow, _wire_encoders, checked_encoders
from streaming.redis_wire import command

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@cache
def encoders() -> tuple[dict, dict]:
    return _wire_encoders(), _protobuf_encoders()


def test_the_direct_encoders_are_chosen_when_they_match_protobuf() -> None:
    WIRE, _ = encoders()
    chosen = checked_encoders()
    assert all(chosen[k].__qualname__.startswith("_wire_encoders.") for k in WIRE)


@settings(max_examples=300, deadline=None)
@given(INT64)
def test_varints_and_int64_values(n: int) -> None:
    WIRE, REFERENCE = encoders()
    assert _varint(n) == _varint_slow(n)
    assert WIRE["int64"](n) == REFERENCE["int64"](n)


@settings(max_examples=200, deadline=None)
@given(st.lists(INT64, max_size=12))
def test_int64_lists(values: list[int]) -> None:
    WIRE, REFERENCE = encoders()
    assert WIRE["int64_list"](values) == REFERENCE["int64_list"](values)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=300), max_size=12))
def test_string_lists(values: list[str]) -> None:
    WIRE, REFERENCE = encoders()
    assert WIRE["string_list"](values) == REFERENCE["string_list"](values)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2**45))
def test_timestamps(ms: int) -> None:
    WIRE, REFERENCE = encoders()
    assert WIRE["timestamp"](ms) == REFERENCE["timestamp"](ms)


def test_commands_are_packed_as_the_wire_protocol() -> None:
    assert command(["HSET", "k\u00e9", 7, b"\x00\r\n"]) == (
        b"*4\r\n$4\r\nHSET\r\n$3\r\nk\xc3\xa9\r\n$1\r\n7\r\n$3\r\n\x00\r\n\r\n")
    try:
        command(["SET", 1.5])
    except TypeError as exc:
        assert "float" in str(exc)
    else:
        raise AssertionError("a float argument must be refused, not sent as its repr")
