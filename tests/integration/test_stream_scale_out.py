"""Processors on several hosts: the group's state in Redis (``stream.state_store: redis``).

Two instances of one consumer group, each with a state directory of its own (no file
is shared, as on two hosts), keep their state in a real ``redis-server``; one is
SIGKILLed mid-stream, the other takes its partitions over with their history, and the
online features equal a from-scratch recomputation.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis

from streaming.harness import StreamStack, free_port
from streaming.state import open_state
from streaming.state_redis import LAYOUT, RedisStateStore, connection_kwargs
from test_stream_reliability import log_of, scrape, synthetic, wait_settled

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    with StreamStack(tmp_path_factory.mktemp("stream_scale_out"), online_store="redis", state_store="redis",
                     state_lock_ms=5000) as s:
        yield s


def test_kill_9_of_one_of_two_instances_on_shared_state_equals_recomputation(stack: StreamStack) -> None:
    s = stack.scope("hosts")
    assert isinstance(open_state(s.settings, s.settings.stream.consumer_group), RedisStateStore)
    events = synthetic("ho", 6000, seed=5)
    ends = s.send(events)
    total = sum(ends.values())
    ports = [free_port(), free_port()]
    procs = []
    try:
        for k in range(2):
            s.settings.stream.state_dir = Path(f"host-{k}/state")  # nothing on disk is shared
            procs.append(s.fork_processor(f"scale-{k}.log", metrics_port=ports[k], batch_max_events=100,
                                          batch_max_wait_ms=20))
        wait_settled(s, procs, ports)
        deadline = time.monotonic() + 120
        while sum(s.watermarks().values()) < total * 0.25:
            assert all(p.is_alive() for p in procs), [log_of(s, f"scale-{k}.log") for k in range(2)]
            assert time.monotonic() < deadline, "the processors made no progress"
            time.sleep(0.02)
        victim = scrape(ports[0])["lag_partitions"]
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].join(timeout=10)
        assert procs[0].exitcode == -signal.SIGKILL
        assert sum(s.watermarks().values()) < total, "the stream finished before the kill"
        # more events on every partition: the killed instance's partitions must move to the survivor
        more = synthetic("hx", 2000, seed=6)
        ends = s.send(more)
        events += more
        s.wait_watermarks(ends, timeout_s=180, procs=())
        deadline = time.monotonic() + 60  # the lag gauges follow the assignment
        while (survivor := scrape(ports[1]))["lag_partitions"] != {0, 1, 2, 3}:
            assert time.monotonic() < deadline, survivor
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=60)
    assert procs[1].exitcode == 0, log_of(s, "scale-1.log")
    assert victim and survivor["lag_partitions"] == {0, 1, 2, 3}  # the killed instance's partitions moved
    assert s.watermarks() == ends
    assert s.mismatches(events) == []
    assert not list(s.home.glob("host-*/state/*.sqlite")), "the state went to a file, not to Redis"


def test_a_stale_instance_cannot_commit_after_its_lock_was_taken_over(stack: StreamStack) -> None:
    address = stack.redis.address
    stale = RedisStateStore(address, "fencing", lock_ms=200)
    fresh = RedisStateStore(address, "fencing", lock_ms=5_000)
    with pytest.raises(RuntimeError, match="taken over"):
        with stale.write_phase([0]) as st:
            st.set_watermarks("t", {0: 10})
            time.sleep(0.4)  # paused past its lock: another instance takes over and commits
            with fresh.write_phase([0]) as other:
                other.set_watermarks("t", {0: 5})
    assert fresh.watermarks("t") == {0: 5}  # the stale write never landed
    with pytest.raises(ValueError):
        with fresh.write_phase([0]) as st:
            st.set_watermarks("t", {0: 7})
            raise ValueError("a failed batch")
    assert fresh.watermarks("t") == {0: 5}  # nothing of a failed write phase is applied
    with fresh.write_phase([0]):
        pass  # the lock was released


def test_status_and_reset_read_the_redis_state(stack: StreamStack) -> None:
    from streaming.status import stream_status

    s = stack.scope("status")
    ends = s.send(synthetic("st", 200, seed=7))
    s.fork_processor("status.log", batch_max_events=100, batch_max_wait_ms=20, until_caught_up=True).join(120)
    status = stream_status(s.settings)
    assert status["state"]["users"] > 0 and status["state"]["path"].startswith("redis://")
    assert s.watermarks() == ends
    store = open_state(s.settings, s.settings.stream.consumer_group)
    assert store.clear() > 0 and store.watermarks(s.settings.kafka.events_topic) == {}


def test_a_state_in_an_older_key_layout_is_refused_not_misread(stack: StreamStack) -> None:
    """A partial stored per entity (the earlier layout) under a group without the layout marker:
    the store says to reset and replay instead of reading partition hashes that are not there."""
    client = redis.Redis(**connection_kwargs(stack.redis.address))
    client.hset("recast:stream-state:old-layout:u:0", 0, '[1,[],[],[],[]]')
    store = RedisStateStore(stack.redis.address, "old-layout")
    with pytest.raises(RuntimeError, match="older key layout.*recast stream reset"):
        with store.write_phase([0]):
            pass
    assert store.clear() == 1
    with store.write_phase([0]) as st:  # a reset group starts in the current layout
        st.set_watermarks("t", {0: 1})
    assert client.get("recast:stream-state:old-layout:layout") == LAYOUT.encode()


def test_write_phases_of_other_partitions_never_wait_and_the_merge_lock_is_only_tried(stack: StreamStack) -> None:
    address = stack.redis.address
    first = RedisStateStore(address, "locks")
    second = RedisStateStore(address, "locks", lock_wait_s=0.3)
    with first.write_phase([0, 1]) as st:
        st.set_watermarks("t", {0: 1, 1: 1})
        with second.write_phase([2]) as other:  # another instance's partition: no wait
            other.set_watermarks("t", {2: 1})
        with pytest.raises(TimeoutError, match="lock:p:1"):
            with second.write_phase([1, 2]):
                pass
        merger = RedisStateStore(address, "locks")
        with merger.merge_phase() as merging:
            with second.merge_phase(wait=False) as busy:
                assert busy is None  # held: the caller goes on instead of waiting
            merging.mark_dirty("i", ["a"])
        with pytest.raises(RuntimeError, match="do not nest"):
            with first.merge_phase():
                pass
    assert first.watermarks("t") == {0: 1, 1: 1, 2: 1} and set(first.dirty()["i"]) == {"a"}
    with second.write_phase([1]) as st:  # released, and partition 2's lock too after the timeout
        st.set_watermarks("t", {1: 2})


def test_a_dirty_mark_made_after_a_merge_read_the_marks_survives_its_commit(stack: StreamStack) -> None:
    store = RedisStateStore(stack.redis.address, "dirty")
    with store.write_phase([0]) as st:
        st.mark_dirty("i", ["a", "b"])
        st.mark_dirty("u", ["x"])
    seen = store.dirty()
    assert set(seen["i"]) == {"a", "b"} and set(seen["u"]) == {"x"}
    with store.write_phase([1]) as st:
        st.mark_dirty("i", ["a"])  # committed between the merge's snapshot and its commit
    with store.merge_phase() as st:
        st.clear_dirty(seen)
    after = store.dirty()
    assert list(after["i"]) == ["a"] and after["i"]["a"] != seen["i"]["a"] and after["u"] == {}
    store.remark_dirty("i", ["b"])
    assert set(store.dirty()["i"]) == {"a", "b"} and store.counts()["merges_owed"] == 2


def test_a_layout_2_state_is_read_and_marked_3(stack: StreamStack) -> None:
    """Layout 2 had the same partials under one group lock: read as it is, marked 3 on the first commit
    (so a layout-2 processor started afterwards refuses it instead of taking a different lock)."""
    client = redis.Redis(**connection_kwargs(stack.redis.address))
    client.set("recast:stream-state:layout2:layout", "2")
    client.hset("recast:stream-state:layout2:wm:t", "0", "7")
    store = RedisStateStore(stack.redis.address, "layout2")
    client.set("recast:stream-state:layout2:lock", "older-processor", px=60_000)  # a rolling upgrade
    with pytest.raises(RuntimeError, match="layout-2 processor"):
        with store.write_phase([0]) as st:
            st.set_watermarks("t", {0: 99})  # it could be applying the same records: refused
    client.delete("recast:stream-state:layout2:lock")
    with store.write_phase([0]) as st:
        assert st.watermarks("t") == {0: 7}
        st.set_watermarks("t", {0: 8})
    assert client.get("recast:stream-state:layout2:layout") == LAYOUT.encode() == b"3"
