"""The stream processor's Prometheus metrics, one registry per processor instance.

Metrics (Prometheus, ``/metrics`` on ``stream.metrics_port``):
``recast_stream_events_total{outcome}``, ``recast_stream_dead_letter_total{reason}``,
``recast_stream_batch_events``, ``recast_stream_batch_seconds``,
``recast_stream_push_seconds{view}``, ``recast_stream_consumer_lag{partition}``,
``recast_stream_assigned_partitions``, ``recast_stream_commit_failures_total``,
``recast_stream_write_failures_total``, ``recast_stream_log_resets_total{partition}``,
``recast_stream_merges_total{outcome}`` (``done``; ``busy``: another instance held the merge lock),
``recast_stream_merge_seconds`` (streaming/merge_phase.py).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ProcessorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter("recast_stream_events_total", "Records handled by the stream processor",
                              ["outcome"], registry=registry)
        self.dead_letter = Counter("recast_stream_dead_letter_total", "Records sent to the dead-letter topic",
                                   ["reason"], registry=registry)
        self.batch_events = Histogram("recast_stream_batch_events", "Records per micro-batch",
                                      buckets=_BATCH_BUCKETS, registry=registry)
        self.batch_rows = Histogram("recast_stream_batch_rows", "Feature rows pushed per micro-batch", ["view"],
                                    buckets=_BATCH_BUCKETS, registry=registry)
        self.batch_seconds = Histogram("recast_stream_batch_seconds", "Write phase of a micro-batch",
                                       buckets=_SECONDS_BUCKETS, registry=registry)
        self.push_seconds = Histogram("recast_stream_push_seconds", "Feast push latency", ["view"],
                                      buckets=_SECONDS_BUCKETS, registry=registry)
        self.lag = Gauge("recast_stream_consumer_lag", "High watermark minus next offset to apply",
                         ["partition"], registry=registry)
        self.assigned = Gauge("recast_stream_assigned_partitions", "Partitions assigned to this instance",
                              registry=registry)
        self.write_failures = Counter("recast_stream_write_failures_total",
                                      "Write phases that failed (the batch is retried with backoff)",
                                      registry=registry)
        self.commit_failures = Counter("recast_stream_commit_failures_total",
                                       "Kafka offset commits that failed (records are redelivered, then skipped)",
                                       registry=registry)
        self.log_resets = Counter("recast_stream_log_resets_total",
                                  "Partition logs found restarted behind the applied watermark",
                                  ["partition"], registry=registry)
        self.merges = Counter("recast_stream_merges_total", "Merge phases run, or not run because another "
                              "instance held the merge lock", ["outcome"], registry=registry)
        self.merge_seconds = Histogram("recast_stream_merge_seconds", "Merge phase (the group's merge lock held)",
                                       buckets=_SECONDS_BUCKETS, registry=registry)
        for outcome in ("done", "busy"):
            self.merges.labels(outcome)
        for outcome in ("processed", "dead_lettered", "duplicate_skipped"):
            self.events.labels(outcome)
