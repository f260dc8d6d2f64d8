"""The processor's write phase with in-memory fakes of Feast, Kafka and the DLQ producer:
order of writes and commits, watermark skips, a failed push commits nothing, rebalances."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka import TopicPartition

from recast.settings import Settings, StreamSettings
from streaming.events import InteractionV1, InvalidEvent, decode, encode
from streaming.processor import StreamProcessor, _Record


class FakeSink:
    def __init__(self, log: list) -> None:
        self.log = log
        self.users: dict[str, dict] = {}
        self.fail = False

    def push_users(self, rows):
        if self.fail:
            raise OSError("online store unavailable")
        self.log.append(("push_users", len(rows)))
        for r in rows:
            self.users[r["user"]] = r
        return (rows or None), 0.001

    def push_items(self, rows):
        self.log.append(("push_items", len(rows)))
        return (rows or None), 0.001

    def write_offline(self, frame, kind, prefix):
        self.log.append(("offline", kind))
        return f"{kind}/{prefix}-x.parquet"

    def remove_orphans(self, prefix, recorded):
        return []


class FakeConsumer:
    def __init__(self, log: list) -> None:
        self.log = log
        self.seeks: dict[int, int] = {}

    def commit(self, offsets):
        self.log.append(("commit", {tp.partition: o.offset for tp, o in offsets.items()}))

    def highwater(self, tp):
        return None

    def seek(self, tp, offset):
        self.seeks[tp.partition] = offset


class FakeDLQ:
    def __init__(self) -> None:
        self.sent = []

    def send(self, topic, key=None, value=None, headers=None):
        self.sent.append((value, dict(headers)))

        class Done:
            def get(self, timeout=None):
                return None

        return Done()

    def flush(self):
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
    assert kinds == ["push_users", "offline", "push_items", "offline", "commit"]
    assert proc.log[-1][1] == {0: 2, 1: 2}
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


def test_rebalance_keeps_the_records_of_retained_partitions(proc) -> None:
    proc.assignment = [0, 1, 2]
    proc.pending = [record(0, 0, "u1", 1), record(1, 0, "u2", 1), record(2, 5, "u3", 1)]
    proc._on_revoked([TopicPartition(proc.topic, 1)])
    assert [r.partition for r in proc.pending] == [0, 2] and proc.assignment == [0, 2]
    proc.state.set_watermarks(proc.topic, {1: 7})
    proc._on_assigned([TopicPartition(proc.topic, 1), TopicPartition(proc.topic, 3)])
    assert proc.consumer.seeks == {1: 7}  # fetch resumes at the watermark; partition 3 is new
    assert proc.assignment == [0, 1, 2, 3] and [tp.partition for tp in proc._unseen] == [3]
