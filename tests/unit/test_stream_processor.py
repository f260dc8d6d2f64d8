"""The processor's write phase with in-memory fakes of Feast, Kafka and the DLQ producer:
order of writes and commits, watermark skips, a failed push commits nothing, rebalances."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka import TopicPartition

from recast.settings import Settings, StreamSettings
from streaming.events import InteractionV1, InvalidEvent, decode, encode
from streaming.processor import StreamProcessor, _Record


class FakePush:
    """A push in flight (streaming/sink.py's ``Push``): acknowledged by ``wait()``, which fails when ``fail``."""

    def __init__(self, sink: "FakeSink", view: str, rows) -> None:
        self.sink, self.view, self.table = sink, view, rows

    def wait(self) -> float:
        if self.sink.fail_ack:
            raise OSError("the online store refused the write")
        self.sink.log.append((f"ack_{self.view}", len(self.table)))
        return 0.001

    def abandon(self) -> None:
        self.sink.log.append((f"abandon_{self.view}", len(self.table)))


class FakeSink:
    def __init__(self, log: list) -> None:
        self.log = log
        self.users: dict[str, dict] = {}
        self.fail = False
        self.fail_ack = False

    def push_users(self, rows):
        if self.fail:
            raise OSError("online store unavailable")
        self.log.append(("push_users", len(rows)))
        for r in rows:
            self.users[r["user"]] = r
        return FakePush(self, "users", rows) if rows else None

    def push_items(self, rows):
        self.log.append(("push_items", len(rows)))
        return FakePush(self, "items", rows) if rows else None

    def write_offline(self, frame, kind, prefix):
        self.log.append(("offline", kind))
        return f"{kind}/{prefix}-x.parquet"

    def remove_orphans(self, prefix, recorded, min_age_s=0.0):
        return []


class FakeConsumer:
    def __init__(self, log: list) -> None:
        self.log = log
        self.seeks: dict[int, int] = {}

    def commit(self, offsets):
        self.log.append(("commit", {tp.partition: o.offset for tp, o in offsets.items()}))

    def highwater(self, tp):
        return None

    def poll(self, timeout_ms=0, max_records=None):
        return {}

    def seek(self, tp, offset):
        self.seeks[tp.partition] = offset

    def seek_to_beginning(self, *tps):
        self.seeks.update((tp.partition, 0) for tp in tps)

    def committed(self, tp):
        return None


class FakeDLQ:
    """Acknowledges every send, unless ``down`` (every ack fails) or the value exceeds ``max_bytes``
    (refused on send, as kafka-python does beyond ``max_request_size``)."""

    def __init__(self) -> None:
        self.sent = []
        self.down = False
        self.max_bytes = 1 << 20

    def send(self, topic, key=None, value=None, headers=None):
        from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

        if len(value) > self.max_bytes:
            raise MessageSizeTooLargeError(f"{len(value)} bytes")
        down = self.down
        if not down:
            self.sent.append((value, dict(headers)))

        class Done:
            def get(self, timeout=None):
                if down:
                    raise KafkaTimeoutError("dead-letter topic unavailable")

        return Done()

    def flush(self, timeout=None):
        pass


@pytest.fixture()
def proc(tmp_path: Path):
    log: list = []
    settings = Settings(home=tmp_path, stream=StreamSettings(state_dir=Path("state"), metrics_port=0))
    p = StreamProcessor(settings, group="unit", sink=FakeSink(log))
    p.consumer, p.dlq, p.log = FakeConsumer(log), FakeDLQ(), log
    yield p
    p.state.close()


def record(partition: int, offset: int, user: str, ts: int, kind: str = "click", raw: bytes | None = None) -> _Record:
    value = raw if raw is not None else encode(
        InteractionV1(event_id=f"{partition}-{offset}", ts_ms=ts, type=kind, user=user, item="i1"))
    try:
        return _Record(partition, offset, b"k", value, decode(value, expect="interaction"), None)
    except InvalidEvent as exc:
        return _Record(partition, offset, b"k", value, None, exc)


def test_writes_then_state_then_offsets(proc) -> None:
    proc.pending = [record(0, 0, "u1", 1000), record(0, 1, "u1", 2000), record(1, 0, "u2", 1000, "view"),
                    record(1, 1, "u2", 1500, raw=b"{bad")]
    assert proc.flush() == 3
    kinds = [entry[0] for entry in proc.log]
    # offsets are committed after the users' ack; the items' rows (merged over partitions) follow in the merge
    assert kinds == ["push_users", "offline", "ack_users", "commit", "push_items", "offline", "ack_items"]
    assert proc.log[3][1] == {0: 2, 1: 2}
    assert not proc.merge_owed and proc.state.counts()["merges_owed"] == 0
    assert proc.state.watermarks(proc.topic) == {0: 2, 1: 2}
    assert proc.sink.users["u1"]["clicks_24h"] == 2 and proc.sink.users["u2"]["events_24h"] == 1
    assert [h["reason"] for _, h in proc.dlq.sent] == [b"not_json"]
    assert proc.totals["dead_lettered"] == 1


def test_redelivered_records_below_the_watermark_are_skipped(proc) -> None:
    batch = [record(0, 0, "u1", 1000), record(0, 1, "u1", 2000)]
    proc.pending = list(batch)
    proc.flush()
    proc.pending = [*batch, record(0, 2, "u1", 3000)]  # redelivery after a lost offset commit, plus a new one
    proc.flush()
    assert proc.totals["duplicate_skipped"] == 2
    assert proc.sink.users["u1"]["clicks_24h"] == 3  # not 5
    assert proc.state.watermarks(proc.topic) == {0: 3}


def test_a_failed_push_commits_neither_state_nor_offsets(proc) -> None:
    batch = [record(0, 0, "u1", 1000), record(0, 1, "u1", 2000)]
    proc.pending = list(batch)
    proc.sink.fail = True
    with pytest.raises(OSError):
        proc.flush()
    assert proc.state.watermarks(proc.topic) == {}
    assert not [e for e in proc.log if e[0] == "commit"]
    assert proc.pending == batch  # kept for the retry
    proc.sink.fail = False
    proc.flush()
    assert proc.sink.users["u1"]["clicks_24h"] == 2
    proc.pending = list(batch)  # a later redelivery changes nothing
    proc.flush()
    assert proc.sink.users["u1"]["clicks_24h"] == 2 and proc.totals["duplicate_skipped"] == 2


def test_a_write_refused_on_acknowledgement_commits_neither_state_nor_offsets(proc) -> None:
    batch = [record(0, 0, "u1", 1000), record(0, 1, "u1", 2000)]
    proc.pending = list(batch)
    proc.sink.fail_ack = True
    with pytest.raises(OSError, match="refused"):
        proc.flush()
    assert proc.state.watermarks(proc.topic) == {} and proc.state.counts()["users"] == 0
    assert not [e for e in proc.log if e[0] == "commit"]
    assert proc.pending == batch
    proc.sink.fail_ack = False
    assert proc.flush() == 2 and proc.state.watermarks(proc.topic) == {0: 2}


def test_an_oversized_record_goes_to_the_dlq_as_a_bounded_excerpt(proc) -> None:
    import hashlib

    huge = b'{"kind": "interaction", "v": 1, "pad": "' + b"x" * (3 << 20) + b'"}'
    proc.settings.stream.dead_letter_excerpt_bytes = 1000
    proc.pending = [record(0, 0, "u1", 1000), record(0, 1, "u1", 1000, raw=huge), record(0, 2, "u1", 2000)]
    assert proc.flush() == 2
    [(value, headers)] = proc.dlq.sent
    assert value == huge[:1000]
    assert headers["reason"] == b"too_large" and headers["truncated"] == b"true"
    assert headers["size"] == str(len(huge)).encode()
    assert headers["sha256"] == hashlib.sha256(huge).hexdigest().encode()
    assert (headers["source_partition"], headers["source_offset"]) == (b"0", b"1")
    assert proc.state.watermarks(proc.topic) == {0: 3}


def test_a_dlq_that_refuses_the_size_gets_the_headers_only(proc) -> None:
    proc.dlq.max_bytes = 10  # the broker's limit below the configured excerpt
    proc.pending = [record(0, 0, "u1", 1000, raw=b"{not json at all"), record(0, 1, "u1", 1000)]
    assert proc.flush() == 1
    [(value, headers)] = proc.dlq.sent
    assert value == b"" and headers["truncated"] == b"true" and headers["reason"] == b"not_json"
    assert headers["size"] == b"16"
    assert proc.state.watermarks(proc.topic) == {0: 2}


def test_dead_letters_are_sent_once_across_retries_and_restarts(proc) -> None:
    batch = [record(0, 0, "u1", 1000, raw=b"{bad"), record(0, 1, "u1", 1000), record(1, 0, "u2", 1, raw=b"[]")]
    proc.pending = list(batch)
    proc.sink.fail = True  # Feast fails after the dead letters went out
    for _ in range(3):
        with pytest.raises(OSError):
            proc.flush()
    assert len(proc.dlq.sent) == 2  # not 6
    proc.sink.fail = False
    proc.flush()
    proc.pending = list(batch)  # redelivered after a restart that lost the offset commit
    proc.flush()
    assert len(proc.dlq.sent) == 2
    assert proc.state.dead_letter_marks(proc.topic) == {0: 1, 1: 1}


def test_an_unavailable_dlq_commits_nothing_and_the_processor_exits_after_repeated_failures(proc) -> None:
    proc.dlq.down = True
    proc.max_write_failures = 3
    proc.batch_max_wait_s = 0.0
    batch = [record(0, 0, "u1", 1000), record(0, 1, "u1", 1000, raw=b"{bad")]
    proc.pending = list(batch)
    proc.pending_since = 0.0
    with pytest.raises(RuntimeError, match="dead-letter topic"):
        proc.run()
    assert proc.metrics.write_failures._value.get() == 3
    assert proc.state.watermarks(proc.topic) == {} and proc.pending == batch  # nothing applied, nothing lost
    assert not [e for e in proc.log if e[0] in ("commit", "push_users")]
    proc.dlq.down = False  # back: the same batch goes through once
    proc.flush()
    assert len(proc.dlq.sent) == 1 and proc.state.watermarks(proc.topic) == {0: 2}


def test_until_caught_up_gives_up_on_a_broker_that_never_assigns(proc) -> None:
    with pytest.raises(RuntimeError, match="not caught up after"):
        proc.run(until_caught_up=True, stall_timeout_s=0.3)


def test_rebalance_keeps_the_records_of_retained_partitions(proc) -> None:
    proc.assignment = [0, 1, 2]
    proc.pending = [record(0, 0, "u1", 1), record(1, 0, "u2", 1), record(2, 5, "u3", 1)]
    proc._on_revoked([TopicPartition(proc.topic, 1)])
    assert [r.partition for r in proc.pending] == [0, 2] and proc.assignment == [0, 2]
    proc.state.set_watermarks(proc.topic, {1: 7})
    proc._on_assigned([TopicPartition(proc.topic, 1), TopicPartition(proc.topic, 3)])
    assert proc.consumer.seeks == {1: 7}  # fetch resumes at the watermark; partition 3 is new
    assert proc.assignment == [0, 1, 2, 3] and [tp.partition for tp in proc._unseen] == [3]


def test_log_reset_reasons() -> None:
    from streaming.log_reset import reset_reason

    assert reset_reason(100, 250, "id-a", "id-a") is None
    assert reset_reason(None, 0, None, "id-a") is None  # nothing applied yet
    assert reset_reason(100, None, "id-a", None) is None  # nothing known yet
    assert "ends at offset 40 but 100" in reset_reason(100, 40, "id-a", "id-a")
    assert "recreated" in reset_reason(100, 400, "id-a", "id-b")  # a longer new log shows only by its id


def test_a_log_reset_stops_or_rebuilds_the_partition(proc) -> None:
    from streaming.log_reset import LogResetError

    proc.pending = [record(0, 0, "u1", 1000), record(0, 1, "u1", 2000), record(1, 0, "u2", 1000)]
    proc.flush()
    proc.assignment, proc.applied = [0, 1], {0: 2, 1: 1}
    proc.consumer.highwater = lambda tp: {0: 1, 1: 5}[tp.partition]  # partition 0's log restarted shorter
    with pytest.raises(LogResetError, match=r"partitions \[0\]"):
        proc._check_log_resets()
    assert proc.metrics.log_resets.labels("0")._value.get() == 1
    assert proc.state.watermarks(proc.topic) == {0: 2, 1: 1}  # fail changes nothing

    proc.settings.stream.on_log_reset = "recompute"
    proc.consumer.seek_to_beginning = lambda *tps: proc.log.append(("seek_to_beginning", [t.partition for t in tps]))
    assert proc._check_log_resets() == {0}
    assert proc.state.watermarks(proc.topic) == {1: 1} and proc.applied[0] == 0
    assert set(proc.state.user_partials(["u1", "u2"])) == {"u2"}  # partition 0's partials are gone
    assert proc.log[-1] == ("seek_to_beginning", [0])


def test_an_offset_twice_in_one_batch_is_applied_once(proc) -> None:
    """A revoke + re-assign during a poll can leave records of the old position next to the same
    offsets fetched again after the seek."""
    proc.pending = [record(0, 0, "u1", 1000), record(0, 1, "u1", 2000), record(0, 0, "u1", 1000),
                    record(0, 1, "u1", 2000), record(0, 2, "u1", 3000)]
    assert proc.flush() == 3
    assert proc.sink.users["u1"]["clicks_24h"] == 3  # not 5
    assert proc.totals["duplicate_skipped"] == 2
    assert proc.state.watermarks(proc.topic) == {0: 3}


def polled(partition: int, offsets: range, user: str = "u1") -> list:
    """Records as ``KafkaConsumer.poll`` returns them."""
    from types import SimpleNamespace

    return [SimpleNamespace(offset=o, key=b"k", value=record(partition, o, user, 1000 + o).value) for o in offsets]


def test_a_batch_never_moves_the_watermark_over_a_hole(proc) -> None:
    """Offsets 5-7 missing (dropped by a rebalance): 8-10 wait, the partition is fetched again from 5."""
    proc.assignment = [0]
    proc.pending = [record(0, o, "u1", 1000 + o) for o in range(5)]
    proc.flush()
    proc.pending = [record(0, o, "u1", 1000 + o) for o in (8, 9, 10)]
    assert proc.flush() == 0
    assert proc.state.watermarks(proc.topic) == {0: 5} and proc.log[-1] == ("commit", {0: 5})
    assert proc.consumer.seeks == {0: 5} and proc.totals["refetched"] == 3
    proc.pending = [record(0, o, "u1", 1000 + o) for o in range(5, 11)]  # fetched again from 5
    assert proc.flush() == 6
    assert proc.sink.users["u1"]["clicks_24h"] == 11 and proc.state.watermarks(proc.topic) == {0: 11}


def test_a_real_gap_in_the_log_is_stepped_over_once_fetched_again_from_it(proc) -> None:
    """Offset 3 is a transaction marker: not in the log, fetched again from it the batch starts at 4."""
    proc.assignment = [0]
    proc.pending = [record(0, o, "u1", 1000 + o) for o in (0, 1, 2, 4, 5)]
    assert proc.flush() == 3 and proc.consumer.seeks == {0: 3}
    proc.pending = [record(0, o, "u1", 1000 + o) for o in (4, 5, 6)]
    assert proc.flush() == 3
    assert proc.state.watermarks(proc.topic) == {0: 7} and proc.sink.users["u1"]["clicks_24h"] == 6


def test_a_rebalance_during_a_poll_loses_nothing(proc) -> None:
    """The rebalance listener runs on the client's IO thread while ``poll`` is in flight: the partition
    is revoked (its pending offsets 0-4 dropped) and re-assigned, and the poll then returns offsets 5-9
    fetched before the revocation. Applied, they moved the watermark to 10 and offsets 0-4 were lost."""
    tp = TopicPartition(proc.topic, 0)
    proc.assignment = [0]
    proc.pending = [record(0, o, "u1", 1000 + o) for o in range(5)]

    def poll_with_a_rebalance(timeout_ms=0, max_records=None):
        proc._on_revoked([tp])
        proc._on_assigned([tp])
        return {tp: polled(0, range(5, 10))}

    proc.consumer.poll = poll_with_a_rebalance
    assert proc.poll_once(0) == 0 and proc.pending == []
    assert proc.consumer.seeks == {0: 0}  # no watermark, no committed offset: fetched again from the start
    proc.consumer.poll = lambda timeout_ms=0, max_records=None: {tp: polled(0, range(10))}
    assert proc.poll_once(0) == 10
    assert proc.flush() == 10
    assert proc.sink.users["u1"]["clicks_24h"] == 10 and proc.state.watermarks(proc.topic) == {0: 10}


def test_the_rebalance_listener_reads_only_committed_watermarks(proc) -> None:
    """``_on_assigned`` runs while the main thread may be inside a write phase on the same store."""
    with proc.state.write_phase([0]) as st:
        st.set_watermarks(proc.topic, {0: 42})  # not committed: the batch may still roll back
        proc._on_assigned([TopicPartition(proc.topic, 0)])
        assert proc.consumer.seeks == {}
    proc._on_assigned([TopicPartition(proc.topic, 0)])
    assert proc.consumer.seeks == {0: 42}
