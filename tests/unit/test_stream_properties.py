"""Property-based tests (hypothesis) of the event decoder and the processor's write phase.

Whatever the bytes: ``decode`` returns a valid event or raises ``InvalidEvent`` with a known reason,
the fast and the slow path agree, and valid events round-trip. Whatever the mix of valid and
hostile records, in compressed or plain Kafka batches: the processor applies exactly the valid
ones (its features equal a from-scratch recomputation) and dead-letters each hostile one once.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder

from recast.settings import Settings, StreamSettings
from streaming.events import INTERACTION_TYPES, InteractionV1, InvalidEvent, decode, encode
from streaming.features import recompute
from streaming.hostile import REASONS
from streaming.processor import StreamProcessor, _Record

KNOWN_REASONS = set(REASONS) | {"undecodable"}
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                      st.text(max_size=20))
json_values = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                              st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=30)
ids = st.text(alphabet=string.ascii_letters + string.digits + "-_é", min_size=1, max_size=128)


@st.composite
def interactions(draw) -> InteractionV1:
    kind = draw(st.sampled_from(INTERACTION_TYPES))
    priced = {"price": draw(st.floats(min_value=1e-9, max_value=1e12)),
              "currency": draw(st.text(alphabet=string.ascii_uppercase, min_size=3, max_size=3))}
    return InteractionV1(event_id=draw(ids), ts_ms=draw(st.integers(1, 2**53 - 1)), type=kind, user=draw(ids),
                         item=draw(ids), request_id=draw(st.none() | ids), **(priced if kind == "purchase" else {}))


def outcome(raw, expect=None):
    try:
        return decode(raw, expect=expect)
    except InvalidEvent as exc:
        assert exc.reason in KNOWN_REASONS, exc.reason
        assert len(exc.detail) <= 1000
        return exc.reason


@FAST
@given(st.binary(max_size=2048))
def test_any_bytes_decode_or_get_a_known_reason(raw: bytes) -> None:
    got = outcome(raw)
    fast = outcome(raw, "interaction")
    if isinstance(got, InteractionV1):
        assert fast == got


@FAST
@given(json_values)
def test_any_json_decodes_or_gets_a_known_reason_the_same_on_both_paths(value) -> None:
    raw = json.dumps(value).encode()
    slow, fast = outcome(raw), outcome(raw, "interaction")
    assert slow == fast or (fast == "unexpected_kind" and not isinstance(slow, str))


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=500, max_value=20_000), st.sampled_from(["[", "{\"a\": "]))
def test_nesting_of_any_depth_is_a_reason_never_a_crash(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    raw = (opener * depth + ("1" if opener != "[" else "") + closer * depth).encode()
    assert outcome(raw) in ("too_deep", "not_an_object", "missing_envelope")  # deep enough: too_deep


@FAST
@given(interactions())
def test_valid_events_round_trip_on_both_paths(event: InteractionV1) -> None:
    raw = encode(event)
    assert decode(raw) == event == decode(raw, expect="interaction")


@FAST
@given(interactions(), st.sampled_from(["kind", "v", "event_id", "ts_ms", "type", "user", "item", "price",
                                         "currency"]), json_values | st.text(min_size=129, max_size=5000))
def test_a_wrong_value_in_any_field_is_rejected_with_a_reason(event: InteractionV1, field: str, value) -> None:
    body = json.loads(encode(event))
    if body.get(field) == value and type(body.get(field)) is type(value):
        return  # hypothesis drew the field's own value
    body[field] = value
    raw = json.dumps(body).encode()
    try:
        again = InteractionV1.model_validate(body) if field not in ("kind", "v") else None
    except ValueError:
        again = None
    if again is not None:  # still a valid event (e.g. another valid id): must decode to exactly it
        assert decode(raw, expect="interaction") == again
        return
    slow, fast = outcome(raw), outcome(raw, "interaction")
    assert isinstance(fast, str) and (slow == fast or fast == "unexpected_kind"), (slow, fast)


# ---------------------------------------------------------------- the processor over Kafka batches
class Pushed:
    """A push acknowledged at once (the interface of streaming/sink.py's ``Push``)."""

    def __init__(self, rows) -> None:
        self.table = rows

    def wait(self) -> float:
        return 0.0

    def abandon(self) -> None:
        pass


class Sink:
    def __init__(self) -> None:
        self.users: dict[str, dict] = {}
        self.items: dict[str, dict] = {}

    def push_users(self, rows):
        self.users.update((r["user"], r) for r in rows)
        return Pushed(rows) if rows else None

    def push_items(self, rows):
        self.items.update((r["item"], r) for r in rows)
        return Pushed(rows) if rows else None

    def write_offline(self, frame, kind, prefix):
        return f"{kind}/x.parquet"

    def remove_orphans(self, prefix, recorded, min_age_s=0.0):
        return []


class Consumer:
    def commit(self, offsets):
        pass

    def highwater(self, tp):
        return None


class DLQ:
    def __init__(self) -> None:
        self.sent: list[tuple[int, int]] = []

    def send(self, topic, key=None, value=None, headers=None):
        h = dict(headers)
        self.sent.append((int(h["source_partition"]), int(h["source_offset"])))

        class Done:
            def get(self, timeout=None):
                return None

        return Done()

    def flush(self, timeout=None):
        pass


def through_a_batch(values: list[bytes | None], codec: int) -> list[bytes | None]:
    """The values as a consumer gets them back from one Kafka record batch of ``codec``."""
    builder = MemoryRecordsBuilder(magic=2, compression_type=codec, batch_size=64 << 20)
    for v in values:
        builder.append(timestamp=None, key=b"k", value=v, headers=[])
    builder.close()
    records = MemoryRecords(builder.buffer())
    out: list[bytes | None] = []
    while records.has_next():
        out += [r.value for r in records.next_batch()]
    return out


hostile_values = st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                           st.none(), st.just(b""))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.booleans(), interactions(), hostile_values, st.integers(0, 3)), min_size=1,
                max_size=60),
       st.sampled_from([0, 1, 2, 3, 4]))
def test_the_processor_applies_the_valid_and_dead_letters_the_rest_once(tmp_path_factory, mix, codec) -> None:
    home = tmp_path_factory.mktemp("prop")
    proc = StreamProcessor(Settings(home=home, stream=StreamSettings(state_dir=Path("state"), metrics_port=0)),
                           group="prop", sink=Sink())
    proc.consumer, proc.dlq = Consumer(), DLQ()
    try:
        raw = [encode(e) if is_valid else v for is_valid, e, v, _ in mix]
        fetched = through_a_batch(raw, codec)
        assert fetched == raw
        offsets = {p: 0 for p in range(4)}
        valid, invalid = [], []
        for (_, _, _, partition), value in zip(mix, fetched):
            offset = offsets[partition]
            offsets[partition] += 1
            try:
                event, error = decode(value, expect="interaction"), None
                valid.append(event)
            except InvalidEvent as exc:
                event, error = None, exc
                invalid.append((partition, offset))
            proc.pending.append(_Record(partition, offset, b"k", value, event, error))
        half = proc.pending[: len(proc.pending) // 2]
        proc.flush()
        proc.pending = half  # a redelivery changes nothing
        proc.flush()
        assert sorted(proc.dlq.sent) == sorted(invalid)
        assert proc.totals["processed"] == len(valid)
        if valid:
            users, _items = recompute(valid, proc.last_n, proc.item_vocab)
            for row in users.iter_rows(named=True):
                got = proc.sink.users[row["user"]]
                assert {k: got[k] for k in row} == row
    finally:
        proc.state.close()


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_every_kafka_codec_is_installed(codec: int) -> None:
    values = [b"x" * 1000, None, b"{}"]
    assert through_a_batch(values, codec) == values
