"""Detection of a partition log that restarted behind the processor's watermark.

The processor's state store says "every event of partition p below offset W
is applied". That is only true of the log it was applied from. When the log
restarts (the memory-only local broker restarted, the topic was deleted and
recreated) the new log's offsets count from 0 again and seeking to W either
waits past the end forever (new log shorter than W) or silently skips the
new log's first W events (new log longer). Two signs show it:

* the **topic id** (Kafka's UUID of a topic, in metadata v10+) differs from
  the one stored with the watermark: the topic was recreated;
* the partition's **high watermark** (from fetch responses) is below the
  applied watermark: the log is shorter than what was applied from it.

What to do is ``stream.on_log_reset``: ``fail`` (the default: stop with
:class:`LogResetError`, exit non-zero) or ``recompute`` (forget the
partition's state and rebuild it from the earliest offset). Either way the
reset is counted in ``recast_stream_log_resets_total{partition}``.
"""

from __future__ import annotations

from typing import Iterable


class LogResetError(RuntimeError):
    """A partition's log restarted behind the applied watermark (see the module docstring)."""


def current_topic_id(consumer, topic: str) -> str | None:
    """The broker's topic id of ``topic`` as the consumer's metadata has it (None: unknown or unsupported)."""
    try:
        topic_id = consumer._client.cluster.topic_id(topic)  # kafka-python keeps it from MetadataResponse v10+
    except AttributeError:
        return None
    return str(topic_id) if topic_id else None


def reset_reason(applied: int | None, high_watermark: int | None, stored_id: str | None,
                 topic_id: str | None) -> str | None:
    """Why the log behind a watermark was reset, in words; None when nothing shows it."""
    if stored_id and topic_id and stored_id != topic_id:
        return (f"the topic was recreated (topic id {topic_id}, the applied events came from {stored_id}): "
                "the broker restarted without its data, or the topic was deleted")
    if applied is not None and high_watermark is not None and high_watermark < applied:
        return (f"the log ends at offset {high_watermark} but {applied} of its events were applied: "
                "the broker lost them (a restart of the memory-only local broker) or the topic was recreated")
    return None


def advice(partitions: Iterable[int], topic: str) -> str:
    return (f"log reset on {topic} partitions {sorted(partitions)}. Either replay the events and run "
            "`recast stream reset` (forgets the processor state), or set stream.on_log_reset: recompute "
            "to rebuild these partitions' features from the log as it is now")
