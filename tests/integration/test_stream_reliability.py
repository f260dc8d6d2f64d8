"""Reliability of the feature stream against the real broker and Feast.

* kill -9 of the processor mid-stream, then a restart: the online features equal
  a from-scratch recomputation (nothing lost, nothing double-counted);
* crashes injected at the three dangerous points of the write phase;
* two instances in one consumer group split the partitions;
* the gateway's exposure publisher while the broker is unavailable.

The local broker is memory-only, so "broker unavailable" is tested by starting
the publisher against a port where no broker listens yet (and by restarting the
broker after it had connected, creating the topics again): restarts of the
broker with data in flight are Kafka's durability job in production.
"""

from __future__ import annotations

import os
import random
import signal
import time
import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from features.feast_repo import stream_offline_dirs
from serving.exposures import ExposurePublisher
from streaming.broker import LocalBroker
from streaming.events import InteractionV1
from streaming.harness import StreamStack, free_port, stack_settings
from streaming.labels import read_topic
from streaming.state import state_path
from streaming.state import StateStore
from streaming.topics import ensure_topics

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    with StreamStack(tmp_path_factory.mktemp("stream_reliability")) as s:
        yield s


def synthetic(prefix: str, n: int, users: int = 150, items: int = 80, seed: int = 0) -> list[InteractionV1]:
    """Events over 3 days of event time in (mostly) increasing order, with prefix-owned entity ids."""
    rng = random.Random(seed)
    t0, out = 1_600_000_000_000, []
    for k in range(n):
        kind = rng.choice(("view", "view", "click", "click", "purchase"))
        out.append(InteractionV1(
            event_id=f"{prefix}-{k}", ts_ms=t0 + k * 40_000 + rng.randint(-600_000, 600_000), type=kind,
            user=f"{prefix}-u{int(rng.paretovariate(1.2)) % users}", item=f"{prefix}-i{rng.randint(0, items - 1)}",
            **({"price": round(rng.uniform(1, 50), 2), "currency": "EUR"} if kind == "purchase" else {}),
        ))
    return out


def log_of(s: StreamStack, name: str) -> str:
    return (s.home / name).read_text(errors="replace")[-3000:]


def assert_no_orphan_parts(s: StreamStack) -> None:
    store = StateStore(state_path(s.settings, s.settings.stream.consumer_group))
    try:
        recorded = store.offline_parts()
    finally:
        store.close()
    group = s.settings.stream.consumer_group
    on_disk = {f"{kind}/{p.name}" for kind, d in zip(("user", "item"), stream_offline_dirs(s.settings))
               for p in d.glob(f"{group}-*.parquet")}
    assert on_disk == recorded, "offline parts of uncommitted batches were left behind"


def test_kill_9_mid_stream_then_restart_equals_recomputation(stack: StreamStack) -> None:
    s = stack.scope("kill9")
    events = synthetic("k9", 6000)
    ends = s.send(events)
    total = sum(ends.values())
    # the real CLI process, SIGKILLed once a quarter of the stream is applied
    first = s.spawn_processor("k9-first.log", "--batch-max-events", "100", "--batch-max-wait-ms", "20",
                              "--metrics-port", "0")
    try:
        deadline = time.monotonic() + 120
        while sum(s.watermarks().values()) < total * 0.25:
            assert first.poll() is None, log_of(s, "k9-first.log")
            assert time.monotonic() < deadline, "the processor made no progress"
            time.sleep(0.02)
        os.kill(first.pid, signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
    assert sum(s.watermarks().values()) < total, "the processor finished before it could be killed mid-stream"

    second = s.fork_processor("k9-second.log", batch_max_events=500, batch_max_wait_ms=20, until_caught_up=True)
    second.join(timeout=120)
    assert second.exitcode == 0, log_of(s, "k9-second.log")
    assert s.watermarks() == ends
    assert s.mismatches(events) == []
    assert_no_orphan_parts(s)


def test_crashes_inside_the_write_phase_lose_and_double_nothing(stack: StreamStack) -> None:
    """SIGKILL before the push, between the push and the state commit, between the state commit
    and the Kafka offset commit, and between a merge's writes and its commit; then a clean run."""
    s = stack.scope("failpoints")
    s.settings.stream.merge_interval_ms = 0  # a merge after every batch: the 3rd is reached mid-stream
    events = synthetic("fp", 3000, users=60, items=40, seed=1)
    ends = s.send(events)
    applied = []
    for k, failpoint in enumerate(["before_push:3", "after_push:3", "after_state_commit:3", "after_merge_push:3"]):
        crashed = s.fork_processor(f"crash-{k}.log", env={"RECAST_STREAM_FAULT": failpoint},
                                   batch_max_events=100, batch_max_wait_ms=20, until_caught_up=True)
        crashed.join(timeout=120)
        assert crashed.exitcode == -signal.SIGKILL, log_of(s, f"crash-{k}.log")
        applied.append(sum(s.watermarks().values()))
    assert 0 < applied[0] < applied[1] < applied[2] < applied[3] < len(events), applied

    clean = s.fork_processor("clean.log", batch_max_events=500, batch_max_wait_ms=20, until_caught_up=True)
    clean.join(timeout=120)
    assert clean.exitcode == 0, log_of(s, "clean.log")
    assert s.watermarks() == ends
    assert s.mismatches(events) == []
    assert_no_orphan_parts(s)


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict = {"lag_partitions": set()}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "recast_stream_assigned_partitions":
                out["assigned"] = sample.value
            elif sample.name == "recast_stream_events_total" and sample.labels.get("outcome") == "processed":
                out["processed"] = sample.value
            elif sample.name == "recast_stream_consumer_lag":
                out["lag_partitions"].add(int(sample.labels["partition"]))
    return out


def wait_settled(s: StreamStack, procs, ports: list[int], timeout_s: float = 90) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        for k, p in enumerate(procs):
            assert p.is_alive(), log_of(s, f"scale-{k}.log")
        try:
            states = [scrape(port) for port in ports]
        except OSError:
            states = []
        if states and all(st.get("assigned", 0) >= 1 for st in states) and \
                sum(st["assigned"] for st in states) == 4:
            return states
        assert time.monotonic() < deadline, f"the group did not settle: {states}"
        time.sleep(0.2)


def test_two_instances_in_one_group_split_the_partitions(stack: StreamStack) -> None:
    """A second instance joins while the first is mid-stream (the rebalance revokes partitions with
    records pending); then both share the work; the result equals the recomputation."""
    s = stack.scope("scale")
    ports = [free_port(), free_port()]
    first = s.fork_processor("scale-0.log", metrics_port=ports[0], batch_max_events=100, batch_max_wait_ms=20)
    procs = [first]
    try:
        wait_settled(s, procs, ports[:1])
        events = synthetic("sc", 6000, seed=2)
        wave1, wave2 = events[:3000], events[3000:]
        s.send(wave1)
        procs.append(s.fork_processor("scale-1.log", metrics_port=ports[1], batch_max_events=100,
                                      batch_max_wait_ms=20))
        wait_settled(s, procs, ports)
        ends = s.send(wave2)
        s.wait_watermarks(ends, timeout_s=120)
        deadline = time.monotonic() + 30  # the metrics are updated right after the offsets commit
        while sum((states := [scrape(port) for port in ports])[k].get("processed", 0) for k in range(2)) < len(events):
            assert time.monotonic() < deadline, states
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: stop after the current batch
        for p in procs:
            p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0], [log_of(s, f"scale-{k}.log") for k in range(2)]
    first_parts, second_parts = (st["lag_partitions"] for st in states)
    assert first_parts and second_parts and not first_parts & second_parts
    assert first_parts | second_parts == {0, 1, 2, 3}
    assert all(st["processed"] > 0 for st in states), states
    assert sum(st["processed"] for st in states) >= len(events)  # a revoked batch may be re-read, not re-applied
    assert s.mismatches(events) == []


def test_reading_the_online_store_leaves_no_connection_for_a_forked_processor(stack: StreamStack) -> None:
    """The processors above are forked from this process after it read the online store: an open
    SQLite connection would be inherited with its WAL lock bookkeeping and the children's writes lost."""
    online = str(stack.settings.path(stack.settings.feast.online_store_path))
    stack.online("user", ["nobody"])
    fds = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
           if os.path.exists(f"/proc/self/fd/{fd}")]
    assert not [f for f in fds if f.startswith(online)]


def test_gateway_publisher_survives_an_unavailable_broker(tmp_path) -> None:
    """No broker yet: exposures buffer up to the bound, the rest are counted as dropped; the broker
    comes up: the buffer is delivered. The broker restarts (memory lost, topics recreated): the
    exposures sent meanwhile are delivered too."""
    port = free_port()
    settings = stack_settings(tmp_path, port)
    registry = CollectorRegistry()
    value = lambda name, **labels: registry.get_sample_value(name, labels) or 0.0  # noqa: E731
    publisher = ExposurePublisher(settings.kafka.bootstrap_servers, settings.kafka.exposures_topic, max_queue=100,
                                  registry=registry, delivery_timeout_ms=60_000).start()
    broker = LocalBroker(settings)
    try:
        accepted = [publisher.publish_scored(f"r{k}", f"u{k % 9}", "dlf", "1", [("a", 0.5), ("b", 0.2)])
                    for k in range(130)]
        assert accepted == [True] * 100 + [False] * 30
        assert publisher.pending == 100
        assert value("recast_gateway_exposures_dropped_total", reason="queue_full") == 30
        assert value("recast_gateway_exposure_broker_up") == 0

        broker.start()
        ensure_topics(settings)
        deadline = time.monotonic() + 60
        while value("recast_gateway_exposures_published_total") < 100:
            assert time.monotonic() < deadline, "buffered exposures were not delivered after the broker came up"
            time.sleep(0.1)
        events, _ = read_topic(settings, settings.kafka.exposures_topic, "exposure")
        assert sorted(e.request_id for e in events) == sorted(f"r{k}" for k in range(100))

        # the broker goes away after the producer connected, and comes back empty
        broker.stop()
        for k in range(100, 120):
            assert publisher.publish_scored(f"r{k}", "u", "dlf", "1", [("a", 0.5)])
        time.sleep(1.0)
        broker.start()
        ensure_topics(settings)
        deadline = time.monotonic() + 60
        while value("recast_gateway_exposures_published_total") < 120:
            assert time.monotonic() < deadline, (
                f"published {value('recast_gateway_exposures_published_total')}, dropped "
                f"{value('recast_gateway_exposures_dropped_total', reason='delivery_failed')}")
            time.sleep(0.1)
        events, _ = read_topic(settings, settings.kafka.exposures_topic, "exposure")
        assert sorted(e.request_id for e in events) == sorted(f"r{k}" for k in range(100, 120))
        assert value("recast_gateway_exposures_dropped_total", reason="delivery_failed") == 0
    finally:
        publisher.close(timeout=2)
        broker.stop()


def exposures_accounting(registry: CollectorRegistry) -> dict[str, float]:
    value = lambda name, **labels: registry.get_sample_value(name, labels) or 0.0  # noqa: E731
    return {"published": value("recast_gateway_exposures_published_total"),
            **{reason: value("recast_gateway_exposures_dropped_total", reason=reason)
               for reason in ("queue_full", "delivery_failed", "invalid", "shutdown")}}


def test_gateway_publisher_accounts_for_every_exposure_when_the_broker_dies(tmp_path) -> None:
    """Connected, then the broker dies for good: what was in flight is counted as delivery_failed after
    the delivery timeout, what was still queued as shutdown; every exposure is published or counted."""
    settings = stack_settings(tmp_path, free_port())
    broker = LocalBroker(settings)
    broker.start()
    registry = CollectorRegistry()
    publisher = ExposurePublisher(settings.kafka.bootstrap_servers, settings.kafka.exposures_topic,
                                  registry=registry, delivery_timeout_ms=2_000).start()
    try:
        ensure_topics(settings)
        for k in range(20):
            publisher.publish_scored(f"a{k}", "u", "dlf", "1", [("a", 0.5)])
        deadline = time.monotonic() + 60
        while exposures_accounting(registry)["published"] < 20:
            assert time.monotonic() < deadline, exposures_accounting(registry)
            time.sleep(0.05)
        broker.stop()
        for k in range(30):
            publisher.publish_scored(f"b{k}", "u", "dlf", "1", [("a", 0.5)])
        deadline = time.monotonic() + 60
        while exposures_accounting(registry)["delivery_failed"] == 0:
            assert time.monotonic() < deadline, exposures_accounting(registry)
            time.sleep(0.1)
    finally:
        publisher.close(timeout=1)
        broker.stop()
    counts = exposures_accounting(registry)
    assert counts["published"] == 20 and counts["delivery_failed"] >= 1
    assert counts["delivery_failed"] + counts["shutdown"] == 30, counts  # none silently lost


def test_gateway_publisher_flushes_its_queue_on_shutdown(tmp_path) -> None:
    settings = stack_settings(tmp_path, free_port())
    broker = LocalBroker(settings)
    broker.start()
    try:
        ensure_topics(settings)
        registry = CollectorRegistry()
        publisher = ExposurePublisher(settings.kafka.bootstrap_servers, settings.kafka.exposures_topic,
                                      registry=registry).start()
        for k in range(500):
            assert publisher.publish_scored(f"s{k}", f"u{k % 7}", "dlf", "1", [("a", 0.5)])
        publisher.close(timeout=30)  # at once: the queue is still full
        counts = exposures_accounting(registry)
        assert counts["published"] == 500 and counts["shutdown"] == 0, counts
        events, _ = read_topic(settings, settings.kafka.exposures_topic, "exposure")
        assert sorted(e.request_id for e in events) == sorted(f"s{k}" for k in range(500))
    finally:
        broker.stop()
