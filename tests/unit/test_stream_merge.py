"""The merge phase (streaming/merge_phase.py) with the SQLite state and in-memory fakes of Feast and Kafka:
item rows follow every commit, a merge that cannot run or fails leaves its marks for the next one."""

from __future__ import annotations

from pathlib import Path

import pytest

from recast.settings import Settings, StreamSettings
from streaming.processor import StreamProcessor
from streaming.state import StateStore
from test_stream_processor import FakeConsumer, FakeDLQ, FakePush, FakeSink, record


class ItemSink(FakeSink):
    """Keeps the item rows too; ``fail_items`` refuses their acknowledgement."""

    def __init__(self, log: list) -> None:
        super().__init__(log)
        self.items: dict[str, dict] = {}
        self.fail_items = False

    def push_items(self, rows):
        self.log.append(("push_items", len(rows)))
        sink = self

        class Push(FakePush):
            def wait(self) -> float:
                if sink.fail_items:
                    raise OSError("the online store refused the write")
                sink.items.update((r["item"], r) for r in rows)
                return super().wait()

        return Push(self, "items", rows) if rows else None


def make(settings: Settings, log: list) -> StreamProcessor:
    p = StreamProcessor(settings, group="unit", sink=ItemSink(log))
    p.consumer, p.dlq, p.log = FakeConsumer(log), FakeDLQ(), log
    return p


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, stream=StreamSettings(state_dir=Path("state"), metrics_port=0, merge_interval_ms=0))


@pytest.fixture()
def proc(settings: Settings):
    p = make(settings, [])
    yield p
    p.state.close()


def clicks(item_row: dict) -> int:
    return item_row["item_clicks_24h"]


def test_an_items_row_merges_every_partition_after_each_commit(proc) -> None:
    proc.pending = [record(0, 0, "u1", 1000), record(1, 0, "u2", 1000), record(2, 0, "u3", 1000, "view")]
    assert proc.flush() == 3
    assert clicks(proc.sink.items["i1"]) == 2 and proc.sink.items["i1"]["item_events_24h"] == 3
    assert not proc.merge_owed and proc.state.dirty() == {"u": {}, "i": {}}


def test_a_taken_merge_lock_defers_the_merge_not_the_batch(proc) -> None:
    proc.merge_owed = False
    assert proc._write([record(0, 0, "u1", 1000)]) == 1  # the write phase: committed, the merge owed
    assert proc.merge_owed and set(proc.state.dirty()["i"]) == {"i1"}
    other = StateStore(proc.state.path)  # another instance on this host, inside its own phase
    other.db.execute("BEGIN IMMEDIATE")
    try:
        assert proc.merge(wait=False) is False  # busy: not waited for
    finally:
        other.db.execute("ROLLBACK")
        other.close()
    assert proc.merge_owed and "i1" not in proc.sink.items
    assert proc.metrics.merges.labels("busy")._value.get() == 1
    assert proc.merge(wait=False) is True
    assert clicks(proc.sink.items["i1"]) == 1 and not proc.merge_owed


def test_a_merge_refused_on_acknowledgement_leaves_the_items_dirty_and_is_retried(proc) -> None:
    proc.pending = [record(0, 0, "u1", 1000), record(1, 0, "u2", 1000)]
    proc.sink.fail_items = True
    with pytest.raises(OSError, match="refused"):
        proc.flush()
    assert proc.pending == []  # the batch itself committed: never applied twice
    assert proc.state.watermarks(proc.topic) == {0: 1, 1: 1}
    assert proc.merge_owed and set(proc.state.dirty()["i"]) == {"i1"}
    proc.sink.fail_items = False
    assert proc.merge(wait=False)
    assert clicks(proc.sink.items["i1"]) == 2 and proc.state.dirty()["i"] == {}


def test_a_merge_whose_commit_fails_marks_its_rows_again(proc, monkeypatch: pytest.MonkeyPatch) -> None:
    proc.merge_owed = False
    proc._write([record(0, 0, "u1", 1000)])
    before = proc.state.dirty()["i"]

    def taken_over(seen):
        raise RuntimeError("the state lock expired and was taken over")

    monkeypatch.setattr(proc.state, "clear_dirty", taken_over)
    with pytest.raises(RuntimeError, match="taken over"):
        proc.merge(wait=True)
    after = proc.state.dirty()["i"]
    assert set(after) == {"i1"} and after["i1"] != before["i1"]  # marked again, by a token of its own


def test_the_next_instance_writes_what_a_killed_one_committed_but_never_merged(settings: Settings) -> None:
    first = make(settings, [])
    first.merge_owed = False
    first._write([record(0, 0, "u1", 1000), record(1, 0, "u2", 1000)])  # killed before its merge
    first.state.close()
    second = make(settings, [])
    assert second.merge_owed  # an instance starts owing a merge
    second.run(idle_exit_s=0)
    assert clicks(second.sink.items["i1"]) == 2 and second.state.dirty()["i"] == {}
    second.state.close()


def test_a_mark_made_after_a_merge_read_the_marks_survives_its_commit(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.sqlite")
    with store.write_phase([0]) as st:
        st.mark_dirty("i", ["a", "b"])
    seen = store.dirty()
    with store.write_phase([1]) as st:
        st.mark_dirty("i", ["a"])  # a phase that committed after the snapshot
    with store.merge_phase() as st:
        st.clear_dirty(seen)
    assert list(store.dirty()["i"]) == ["a"]
    store.close()


def test_a_user_in_several_partitions_is_merged_again(proc) -> None:
    proc.pending = [record(0, 0, "u1", 1000)]
    proc.flush()
    proc.log.clear()
    proc.pending = [record(1, 0, "u1", 2000)]  # a producer that does not key by user
    proc.flush()
    assert [e for e in proc.log if e[0] == "push_users"] == [("push_users", 1), ("push_users", 1)]
    assert proc.sink.users["u1"]["clicks_24h"] == 2 and proc.state.dirty()["u"] == {}


def test_batches_within_the_merge_interval_share_one_merge(settings: Settings) -> None:
    settings.stream.merge_interval_ms = 60_000
    p = make(settings, [])
    p.pending = [record(0, 0, "u1", 1000)]
    p.flush()  # the first merge is due at once
    p.pending = [record(1, 0, "u2", 1000)]
    p.flush()
    p.pending = [record(2, 0, "u3", 1000)]
    p.flush()
    assert [e for e in p.log if e[0] == "push_items"] == [("push_items", 1)]
    assert clicks(p.sink.items["i1"]) == 1 and p.merge_owed and not p.merge_due()
    p.run(idle_exit_s=0)  # the owed merge is not left behind at the end
    assert [e for e in p.log if e[0] == "push_items"] == [("push_items", 1), ("push_items", 1)]
    assert clicks(p.sink.items["i1"]) == 3 and not p.merge_owed
    p.state.close()
