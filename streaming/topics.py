"""Topics, client configuration and topic administration (kafka-python).

Everything points at ``settings.kafka.bootstrap_servers``: the local Tansu
broker by default, any Kafka cluster through configuration.

| topic (default name)  | key  | carries                     | partitions |
|-----------------------|------|-----------------------------|------------|
| ``recast.events``     | user | InteractionV1               | 4          |
| ``recast.exposures``  | user | ExposureV1 (the gateway)    | 4          |
| ``recast.outcomes``   | user | OutcomeV1                   | 4          |
| ``recast.events.dlq`` | as the original | original bytes (at most ``stream.dead_letter_excerpt_bytes``) + headers ``reason``, ``detail``, ``source_topic``, ``source_partition``, ``source_offset``, ``size``, ``sha256``, ``truncated`` (streaming/dead_letter.py) | 1 |
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from recast.settings import KafkaSettings, Settings

log = logging.getLogger(__name__)


class _CancelledRefreshIsNotAnError(logging.Filter):
    """kafka-python logs an ERROR when a client is closed while a metadata refresh is in flight.

    Nothing failed (the refresh was cancelled by the close), yet every short-lived client, such as
    the labels job's topic read, printed it: dropped here, every other kafka record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (record.msg == "Metadata refresh: failed %s" and args
                    and "Cancelled" in type(args[0]).__name__)


logging.getLogger("kafka.cluster").addFilter(_CancelledRefreshIsNotAnError())
# kafka-python's notice that one of its own event-loop tasks ran over 100 ms (a busy 2-core host
# during a replay): about its scheduling, not about any record, and it floods a replay's output.
logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    kind: str
    """Event kind it carries ("dead-letter" for the DLQ)."""


def topic_specs(settings: Settings) -> list[TopicSpec]:
    k = settings.kafka
    return [
        TopicSpec(k.events_topic, k.partitions, "interaction"),
        TopicSpec(k.exposures_topic, k.partitions, "exposure"),
        TopicSpec(k.outcomes_topic, k.partitions, "outcome"),
        TopicSpec(k.dead_letter_topic, k.dead_letter_partitions, "dead-letter"),
    ]


def _common(k: KafkaSettings) -> dict[str, Any]:
    return {"bootstrap_servers": k.bootstrap_servers.split(","), "client_id": k.client_id,
            "request_timeout_ms": k.request_timeout_ms}


def producer_config(k: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    cfg = {**_common(k), "acks": "all", "linger_ms": 5, "retries": 5, "max_in_flight_requests_per_connection": 1}
    cfg.update(overrides)
    return cfg


def consumer_config(k: KafkaSettings, group_id: str | None, **overrides: Any) -> dict[str, Any]:
    cfg = {
        **_common(k),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": k.session_timeout_ms,
        "heartbeat_interval_ms": k.heartbeat_interval_ms,
        "max_poll_interval_ms": k.max_poll_interval_ms,
        "fetch_max_wait_ms": 100,
    }
    # kafka-python requires request_timeout_ms > session_timeout_ms for group members
    cfg["request_timeout_ms"] = max(k.request_timeout_ms, k.session_timeout_ms + 1000)
    cfg.update(overrides)
    return cfg


def admin(settings: Settings, timeout_s: float = 10.0):
    """A KafkaAdminClient, retrying until the broker answers or ``timeout_s`` passes."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return KafkaAdminClient(**_common(settings.kafka))
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kafka at {settings.kafka.bootstrap_servers} is unreachable: {exc}") from exc
            time.sleep(0.2)


def ensure_topics(settings: Settings, timeout_s: float = 10.0) -> dict[str, int]:
    """Create the missing topics (idempotent); returns ``{topic: partitions}`` as the broker has them."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    client = admin(settings, timeout_s)
    try:
        existing = set(client.list_topics())
        new = [NewTopic(t.name, t.partitions, settings.kafka.replication_factor)
               for t in topic_specs(settings) if t.name not in existing]
        if new:
            try:
                client.create_topics(new)
            except TopicAlreadyExistsError:  # a concurrent creator won
                pass
        return describe_topics(settings, client)
    finally:
        client.close()


def describe_topics(settings: Settings, client=None) -> dict[str, int]:
    own = client is None
    client = client or admin(settings)
    try:
        wanted = [t.name for t in topic_specs(settings)]
        present = set(client.list_topics())
        described = client.describe_topics([t for t in wanted if t in present])
        return {d.get("name", d.get("topic")): len(d["partitions"]) for d in described}
    finally:
        if own:
            client.close()


def read_topic_values(settings: Settings, topic: str, timeout_s: float = 30.0) -> list[bytes]:
    """Every message value on ``topic``, from the beginning to the current end (no group).

    The end is the high watermark reported by fetches (the local broker's
    ListOffsets answers the base offset of the last batch, not the end).
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**consumer_config(settings.kafka, None))
    try:
        parts = consumer.partitions_for_topic(topic)
        deadline = time.monotonic() + timeout_s
        while parts is None and time.monotonic() < deadline:
            time.sleep(0.1)
            parts = consumer.partitions_for_topic(topic)
        if parts is None:
            raise RuntimeError(f"topic {topic!r} does not exist on {settings.kafka.bootstrap_servers}")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        values: list[bytes] = []
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200, max_records=10000).values():
                values.extend(r.value for r in records)
            if all((hw := consumer.highwater(tp)) is not None and consumer.position(tp) >= hw for tp in tps):
                return values
        raise RuntimeError(f"could not read {topic!r} to its end within {timeout_s:.0f}s")
    finally:
        consumer.close(autocommit=False)
