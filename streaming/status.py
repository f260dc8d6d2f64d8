"""``recast stream status``: the broker, the topics, and where the processor group stands."""

from __future__ import annotations

import time
from typing import Any

from recast.settings import Settings
from streaming.log_reset import advice, current_topic_id, reset_reason


def stream_status(settings: Settings, group: str | None = None, timeout_s: float = 5.0) -> dict[str, Any]:
    from streaming.broker import broker_status
    from streaming.state import open_state, state_path

    group = group or settings.stream.consumer_group
    out: dict[str, Any] = {"broker": broker_status(settings), "group": group}
    path = state_path(settings, group)
    marks: dict[int, int] = {}
    log_ids: dict[int, str] = {}
    if settings.stream.state_store == "redis" or path.exists():
        try:
            store = open_state(settings, group)
            try:
                marks = store.watermarks(settings.kafka.events_topic)
                log_ids = store.log_ids(settings.kafka.events_topic)
                out["state"] = {"path": str(store.path), **store.counts()}
            finally:
                store.close()
        except Exception as exc:  # status answers whatever happens (a Redis that is down)
            out["state"] = {"error": str(exc)}
    else:
        out["state"] = {"path": str(path), "exists": False}
    if out["broker"].get("healthy"):
        try:
            out["partitions"] = _partitions(settings, group, marks, log_ids, timeout_s)
        except Exception as exc:  # status answers whatever happens
            out["partitions_error"] = str(exc)
        else:
            resets = {p["partition"]: p["log_reset"] for p in out["partitions"] if p["log_reset"]}
            out["problems"] = [f"partition {p}: {why}" for p, why in sorted(resets.items())]
            if resets:
                out["problems"].append(advice(resets, settings.kafka.events_topic))
    return out


def _partitions(settings: Settings, group: str, marks: dict[int, int], log_ids: dict[int, str],
                timeout_s: float) -> list[dict[str, Any]]:
    """High watermark (from a fetch: the local broker's ListOffsets is not the end), watermark, committed,
    lag, and whether the log was reset behind the watermark (streaming/log_reset.py)."""
    from kafka import KafkaConsumer, TopicPartition

    from streaming.topics import consumer_config

    topic = settings.kafka.events_topic
    consumer = KafkaConsumer(**consumer_config(settings.kafka, group))
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, marks.get(tp.partition, 0))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(consumer.highwater(tp) is None for tp in tps):
            consumer.poll(timeout_ms=200, max_records=1)
        rows = []
        topic_id = current_topic_id(consumer, topic)
        for tp in tps:
            hw = consumer.highwater(tp)
            committed = consumer.committed(tp)
            mark = marks.get(tp.partition)
            reset = reset_reason(mark, hw, log_ids.get(tp.partition), topic_id)
            rows.append({"partition": tp.partition, "high_watermark": hw, "applied_watermark": mark,
                         "committed": committed, "lag": None if hw is None or reset else hw - (mark or 0),
                         "log_reset": reset})
        return rows
    finally:
        consumer.close(autocommit=False)
