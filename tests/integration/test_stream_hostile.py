"""Nothing a producer sends stops the stream, and nothing is silently lost (real broker, real Feast).

* hostile records (every reason, records over 1 MiB, deep nesting) interleaved with valid events in
  batches of every codec: the valid ones equal a from-scratch recomputation, every hostile one is in
  the dead-letter topic exactly once with its reason;
* a librdkafka client (confluent-kafka) produces and consumes against the local broker, and its
  events are processed exactly like kafka-python's;
* a broker restart (the memory-only broker loses its logs) is refused loudly, or rebuilt from the
  new log with ``stream.on_log_reset: recompute``; ``stream status`` says so in words.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from streaming.broker import LocalBroker
from streaming.events import encode, key_of
from streaming.harness import StreamStack, free_port
from streaming.hostile import hostile_records, interleave, valid_events
from streaming.log_reset import LogResetError
from streaming.processor import StreamProcessor
from streaming.status import stream_status
from streaming.topics import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CODECS = (None, "gzip", "snappy", "lz4", "zstd")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    with StreamStack(tmp_path_factory.mktemp("stream_hostile")) as s:
        yield s


def process(s: StreamStack, **settings) -> tuple[dict, CollectorRegistry]:
    registry = CollectorRegistry()
    cfg = s.settings.model_copy(update={"stream": s.settings.stream.model_copy(update=settings)})
    proc = StreamProcessor(cfg, registry=registry, batch_max_events=500, batch_max_wait_ms=50).start()
    try:
        return proc.run(until_caught_up=True, stall_timeout_s=60), registry
    finally:
        proc.close(flush=False)


def send_compressed(s: StreamStack, records: list[tuple]) -> list[tuple[int, int]]:
    """One chunk per codec; returns the (partition, offset) of each record."""
    chunk = -(-len(records) // len(CODECS))
    return [at for k, codec in enumerate(CODECS) for at in s.send_raw(records[k * chunk:(k + 1) * chunk], codec)]


def dead_letters(s: StreamStack) -> Counter:
    """(source_partition, source_offset, reason) -> how often it is on the dead-letter topic."""
    seen: Counter = Counter()
    for h, value in s.dead_letters():
        assert h["source_topic"] == s.settings.kafka.events_topic and h["detail"] and len(h["sha256"]) == 64
        assert len(value) <= s.settings.stream.dead_letter_excerpt_bytes
        assert (h["truncated"] == "true") == (int(h["size"]) > len(value))
        seen[(int(h["source_partition"]), int(h["source_offset"]), h["reason"])] += 1
    return seen


def test_hostile_records_in_compressed_batches_reach_the_dlq_once_and_valid_ones_apply(stack: StreamStack) -> None:
    s = stack.scope("hostile")
    valid = valid_events(2000, "hx", seed=3)
    hostile = list(hostile_records(500, seed=3, large_every=100))
    stream = interleave(valid, hostile, seed=3)
    where = send_compressed(s, stream)
    reason_at = {at: reason for (_k, _v, reason), at in zip(stream, where) if reason is not None}
    assert len(reason_at) == len(hostile)

    totals, registry = process(s)
    assert totals["processed"] == len(valid) and totals["dead_lettered"] == len(hostile)
    assert s.mismatches(valid) == []
    letters = dead_letters(s)
    assert set(letters.values()) == {1}, "a dead letter was written twice"
    assert {(p, o): reason for p, o, reason in letters} == reason_at  # every hostile record, its reason
    assert {"too_large", "too_deep", "not_json", "unsupported_version"} <= set(reason_at.values())
    assert sum(registry.get_sample_value("recast_stream_dead_letter_total", {"reason": r}) or 0
               for r in set(reason_at.values())) == len(hostile)

    # a second run over the same log (a restart) writes nothing again
    again, _ = process(s)
    assert again.get("dead_lettered", 0) == 0 and dead_letters(s) == letters


def test_a_librdkafka_client_produces_and_consumes_like_kafka_python(stack: StreamStack) -> None:
    import confluent_kafka

    s = stack.scope("librdkafka")
    events = valid_events(800, "rd", seed=4)
    bootstrap = s.settings.kafka.bootstrap_servers
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "compression.type": "lz4",
                                         "linger.ms": 20, "enable.idempotence": False})
    errors = []
    for e in events:
        producer.produce(s.settings.kafka.events_topic, key=key_of(e), value=encode(e),
                         on_delivery=lambda err, msg: errors.append(err) if err else None)
        producer.poll(0)
    assert producer.flush(30) == 0 and errors == []

    del producer  # librdkafka clients close when collected
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "rd-reader",
                                         "enable.auto.commit": False})
    try:
        consumer.assign([confluent_kafka.TopicPartition(s.settings.kafka.events_topic, p,
                                                        confluent_kafka.OFFSET_BEGINNING) for p in range(4)])
        got = []
        deadline = time.monotonic() + 60
        while len(got) < len(events) and time.monotonic() < deadline:
            got += [m.value() for m in consumer.consume(500, timeout=0.5) if m.error() is None]
        assert sorted(got) == sorted(encode(e) for e in events)
    finally:
        consumer.close()

    totals, _ = process(s)
    assert totals["processed"] == len(events) and totals.get("dead_lettered", 0) == 0
    assert s.mismatches(events) == []


def own_broker(stack: StreamStack, name: str, storage: str = "memory") -> tuple[StreamStack, LocalBroker]:
    """A scope with a broker of its own (restarted by the test without touching the others)."""
    s = stack.scope(name)
    k = s.settings.kafka
    s.settings = s.settings.model_copy(update={
        "kafka": k.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}", "local_storage": storage,
                                      "storage_dir": Path(name) / "broker"}),
        "triton": s.settings.triton.model_copy(update={"log_dir": Path(name) / "logs"}),
    })
    s._producer = None
    broker = LocalBroker(s.settings)
    broker.start()
    ensure_topics(s.settings)
    return s, broker


def log_of(s: StreamStack, name: str) -> str:
    path = s.home / name
    return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def restart(s: StreamStack, broker: LocalBroker) -> None:
    if s._producer is not None:
        s._producer.close(timeout=2)
        s._producer = None
    broker.stop()
    broker.start()
    ensure_topics(s.settings)


def test_a_broker_restart_is_refused_loudly_or_recomputed(stack: StreamStack) -> None:
    s, broker = own_broker(stack, "restart")
    try:
        before = valid_events(1200, "rs", seed=5)
        s.send(before)
        totals, _ = process(s)
        assert totals["processed"] == len(before)

        # a running processor (a long-lived service) sees the broker restart under it and stops
        running = s.fork_processor("running.log", batch_max_wait_ms=50)
        deadline = time.monotonic() + 60
        while "assigned partitions [0, 1, 2, 3]" not in log_of(s, "running.log"):
            assert running.is_alive() and time.monotonic() < deadline, log_of(s, "running.log")
            time.sleep(0.1)
        restart(s, broker)  # memory-only: every log starts again at offset 0
        after = valid_events(400, "rs2", seed=6)
        s.send(after)
        running.join(timeout=120)
        assert running.exitcode not in (0, None), log_of(s, "running.log")
        assert "LogResetError" in log_of(s, "running.log")

        # fail (the default): a clear error and a metric, nothing applied
        registry = CollectorRegistry()
        proc = StreamProcessor(s.settings, registry=registry, batch_max_wait_ms=50).start()
        try:
            with pytest.raises(LogResetError, match="log reset on .* partitions"):
                proc.run(until_caught_up=True, stall_timeout_s=60)
        finally:
            proc.close(flush=False)
        assert sum(registry.get_sample_value("recast_stream_log_resets_total", {"partition": str(p)}) or 0
                   for p in range(4)) >= 1
        assert sum(s.watermarks().values()) == len(before)  # the new events were neither applied nor skipped

        # the CLI exits non-zero with the advice; status says it in words
        cli = subprocess.run([sys.executable, "-m", "recast.cli", "stream", "process", "--until-caught-up",
                              "--metrics-port", "0"], capture_output=True, text=True, env=s.child_env(),
                             cwd=str(s.home), timeout=180)
        assert cli.returncode != 0 and "stream.on_log_reset: recompute" in cli.stderr, cli.stderr[-2000:]
        status = stream_status(s.settings)
        *why, what_to_do = status["problems"]
        assert len(why) == 4 and all("the topic was recreated" in p for p in why), why
        assert "stream.on_log_reset: recompute" in what_to_do
        assert all(p["log_reset"] for p in status["partitions"])

        # recompute: the partitions are rebuilt from the new log, which equals a recomputation over it
        totals, registry = process(s, on_log_reset="recompute")
        assert totals["log_resets"] == 4 and totals["processed"] == len(after)
        assert s.mismatches(after) == []
        assert sum(s.watermarks().values()) == len(after)
        assert stream_status(s.settings)["problems"] == []
    finally:
        broker.stop()


def test_a_durable_local_broker_loses_nothing_across_restarts(stack: StreamStack) -> None:
    """kafka.local_storage: s3rver: the broker and its S3 server restart between two runs of the
    processor, with events sent in between; every event is applied once, no log reset is seen."""
    s, broker = own_broker(stack, "durable", storage="s3rver")
    try:
        assert broker.status()["storage"].startswith("s3rver:")
        first = valid_events(900, "du", seed=7)
        ends_before = s.send(first)
        totals, _ = process(s)
        assert totals["processed"] == len(first)

        restart(s, broker)  # tansu and s3rver both stop and start again
        second = valid_events(600, "du2", seed=8)
        s.send(second)
        totals, registry = process(s)
        assert totals["processed"] == len(second) and totals.get("log_resets", 0) == 0
        assert totals.get("duplicate_skipped", 0) == 0
        assert sum(s.watermarks().values()) == len(first) + len(second)
        assert all(s.watermarks()[p] >= o for p, o in ends_before.items())
        assert s.mismatches(first + second) == []
        assert stream_status(s.settings)["problems"] == []
    finally:
        broker.stop()
