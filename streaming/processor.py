"""The stream feature processor: interaction events -> streaming features in Feast (+ parquet).

A consumer-group member of ``settings.stream.consumer_group`` reading
``kafka.events_topic``. Instances of one group split the partitions (events
are keyed by user), so the processor scales out up to the partition count.

Per micro-batch (up to ``batch_max_events`` records or ``batch_max_wait_ms``):

1. every record is decoded and validated (streaming/events.py) as it arrives;
   invalid ones go to the **dead-letter topic** with the original key and bytes
   and headers ``reason``, ``detail``, ``source_topic``, ``source_partition``,
   ``source_offset``; processing continues;
2. write phase, inside one state-store transaction locking the batch's
   partitions: records below the partition's offset watermark are skipped
   (already applied before a crash); the DLQ sends are flushed; the partials
   of the touched users/items are loaded and updated; the user rows are
   **pushed** to Feast (one push) and written as a parquet part; then the
   partials, the new watermarks and the items' *dirty* marks are committed;
3. the Kafka offsets are committed **after** all writes succeeded;
4. merge phase, under the group's one merge lock, when it is free: the rows of
   the dirty items (whose partials are in every partition) are merged, pushed
   and written, and their marks cleared. When another instance holds the
   lock, this one goes on with its next batch and tries again.

(Steps 2 and 3 are streaming/write_phase.py, step 4 streaming/merge_phase.py,
the rebalance handling streaming/rebalance.py; this module is the consumer
loop and the entry point.)

So delivery is at-least-once and the aggregates are idempotent: a crash
anywhere replays records whose effect was either not committed (recomputed
from the same state, same values pushed again) or committed (skipped by the
watermark). Parts written by a batch that never committed are deleted on
the next assignment. Kafka transactions (exactly-once) are not used: the
sinks (Feast, parquet) cannot join them, and the watermarks give the same
effect for the features.

Invalid records never stop it: the decoder classifies any failure as a
dead-letter reason, and dead letters are bounded in size and written once per
source offset (streaming/dead_letter.py). A partition log that restarted
behind the applied watermark (a broker that lost its data) is detected, never
silently skipped: ``stream.on_log_reset`` says whether to stop or to rebuild
(streaming/log_reset.py).

Metrics: streaming/processor_metrics.py.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import defaultdict
from typing import Any

from prometheus_client import CollectorRegistry

from recast.settings import Settings
from streaming.events import InvalidEvent, decode
from streaming.log_reset import LogResetError, advice, current_topic_id, reset_reason
from streaming.merge_phase import MergePhase
from streaming.processor_metrics import ProcessorMetrics
from streaming.rebalance import RebalanceHandling, cleanup_times
from streaming.state import open_state
from streaming.write_phase import FAULT_ENV, MicroBatchWriter, _Failpoint, _Record, _tp, paused_gc  # noqa: F401

log = logging.getLogger("recast.stream")

def load_item_vocab(settings: Settings) -> dict[str, int]:
    path = settings.path(settings.data.features_dir) / "vocab.json"
    if not path.exists():
        log.warning("%s missing: last_item_ids will be empty (run `recast features build`)", path)
        return {}
    return json.loads(path.read_text()).get("item_id", {})


class StreamProcessor(RebalanceHandling, MicroBatchWriter, MergePhase):
    """One instance of the processor; ``run()`` until stopped, caught up, idle or ``max_events``."""

    def __init__(
        self,
        settings: Settings,
        group: str | None = None,
        registry: CollectorRegistry | None = None,
        batch_max_events: int | None = None,
        batch_max_wait_ms: int | None = None,
        feast_store=None,
        write_offline: bool = True,
        sink=None,
    ) -> None:
        from streaming.sink import FeastSink

        self.settings = settings
        self.topic = settings.kafka.events_topic
        self.group = group or settings.stream.consumer_group
        self.batch_max_events = max(1, batch_max_events or settings.stream.batch_max_events)
        self.batch_max_wait_s = (settings.stream.batch_max_wait_ms if batch_max_wait_ms is None
                                 else batch_max_wait_ms) / 1e3
        self.last_n = settings.stream.last_n_items
        self.max_write_failures = settings.stream.max_write_failures
        self.write_offline = write_offline
        self.registry = registry or CollectorRegistry()
        self.metrics = ProcessorMetrics(self.registry)
        self.state = open_state(settings, self.group)
        self.sink = sink or FeastSink(settings, feast_store)
        self.item_vocab = load_item_vocab(settings)
        self.fault = _Failpoint()
        self.consumer = None
        self.dlq = None
        self.pending: list[_Record] = []
        self.pending_since = 0.0
        self.pending_lock = threading.Lock()
        """Guards ``pending`` and ``assignment``: the rebalance listener changes them from the client's IO thread."""
        self._revoked_in_poll: set[int] = set()
        self.refetched: dict[int, int] = {}
        """Partition -> offset it was fetched again from after a batch stopped at a hole (write_phase.py)."""
        self.applied: dict[int, int] = {}
        """Next offset to apply per assigned partition (for the lag)."""
        self.assignment: list[int] = []
        self._unseen: list = []
        self.log_ids: dict[int, str] = {}
        """Topic id of the log each partition's watermark counts in (streaming/log_reset.py)."""
        self._cleanups = cleanup_times(self.state)
        self.merge_owed = True
        """A merge is owed (streaming/merge_phase.py): after this instance's phases marked rows dirty, and at
        start, for what a crashed instance left marked."""
        self.merge_interval_s = settings.stream.merge_interval_ms / 1e3
        self.next_merge_at = 0.0
        """When an owed merge is tried next (``merge_interval_s`` after the last, sooner after a busy lock)."""
        self.stop_requested = False
        self.totals: dict[str, int] = defaultdict(int)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "StreamProcessor":
        from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer

        from streaming.topics import consumer_config, producer_config

        k = self.settings.kafka
        processor = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                processor._on_revoked(revoked)

            def on_partitions_assigned(self, assigned):
                processor._on_assigned(assigned)

        s = self.settings.stream
        self.dlq = KafkaProducer(**producer_config(k, max_request_size=s.dead_letter_max_request_bytes,
                                                   max_block_ms=int(s.dead_letter_timeout_s * 1000)))
        self.consumer = KafkaConsumer(**consumer_config(k, self.group, max_partition_fetch_bytes=4 << 20))
        self.consumer.subscribe([self.topic], listener=Listener())
        return self

    def close(self, flush: bool = True) -> None:
        if self.consumer is not None:
            try:
                if flush and self.pending:
                    self.flush()
                if flush and self.merge_owed:
                    self.merge(wait=True)
            finally:
                self.consumer.close(autocommit=False)
                self.consumer = None
        if self.dlq is not None:
            self.dlq.close(timeout=5)
            self.dlq = None
        self.state.close()

    def request_stop(self, *_: Any) -> None:
        self.stop_requested = True

    # ------------------------------------------------------------------ loop
    def poll_once(self, timeout_ms: int) -> int:
        room = self.batch_max_events - len(self.pending)
        with self.pending_lock:
            self._revoked_in_poll = set()
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=max(1, room))
        if self._unseen:
            self._check_unseen()
        reset = self._check_log_resets()
        with paused_gc():  # see MicroBatchWriter
            n = self._add_polled(self._decode_polled(polled, reset))
        if n and len(self.pending) == n:
            self.pending_since = time.monotonic()
        self._update_lag()
        return n

    def _decode_polled(self, polled, reset: set[int]) -> list[_Record]:
        out = []
        for tp, records in polled.items():
            if tp.partition in reset:
                continue  # fetched from the old position: read again from the beginning
            for r in records:
                try:
                    event, error = decode(r.value, expect="interaction"), None
                except InvalidEvent as exc:
                    event, error = None, exc
                except Exception as exc:  # noqa: BLE001 - decode raises only InvalidEvent; never stop on a record
                    event, error = None, InvalidEvent("undecodable", repr(exc)[:200])
                out.append(_Record(tp.partition, r.offset, r.key, r.value, event, error))  # type: ignore[arg-type]
        return out

    def current_topic_id(self) -> str | None:
        return current_topic_id(self.consumer, self.topic) if self.consumer is not None else None

    def _check_log_resets(self) -> set[int]:
        """Partitions whose log restarted behind the watermark: stop (``fail``) or forget them (``recompute``)."""
        topic_id = self.current_topic_id()
        found = {}
        for p in self.assignment:
            why = reset_reason(self.applied.get(p), self.consumer.highwater(_tp(self.topic, p)),
                               self.log_ids.get(p), topic_id)
            if why:
                found[p] = why
        if not found:
            return set()
        for p, why in sorted(found.items()):
            self.metrics.log_resets.labels(str(p)).inc()
            log.error("partition %d of %s: %s", p, self.topic, why)
        if self.settings.stream.on_log_reset != "recompute":
            raise LogResetError(f"{advice(found, self.topic)}. {'; '.join(found.values())}")
        with self.state.write_phase(found) as st:
            for p in found:
                st.forget_partition(self.topic, p)
        with self.pending_lock:
            self.pending = [r for r in self.pending if r.partition not in found]
        for p in found:
            self.applied[p] = 0
            self.log_ids.pop(p, None)
        self.consumer.seek_to_beginning(*(_tp(self.topic, p) for p in found))
        log.warning("on_log_reset=recompute: partitions %s of %s are rebuilt from their earliest offset",
                    sorted(found), self.topic)
        self.totals["log_resets"] += len(found)
        return set(found)

    def run(self, max_events: int | None = None, idle_exit_s: float | None = None,
            until_caught_up: bool = False, stall_timeout_s: float | None = None) -> dict[str, int]:
        """Process until stopped; ``until_caught_up`` stops once every assigned partition has lag 0, and
        raises after ``stall_timeout_s`` without a new record or assignment (a stuck broker)."""
        if self.consumer is None:
            self.start()
        stall_s = self.settings.stream.stall_timeout_s if stall_timeout_s is None else stall_timeout_s
        last_data = last_progress = time.monotonic()
        progress_mark: tuple = ()
        failures = 0
        while not self.stop_requested:
            wait = self.batch_max_wait_s if not self.pending else max(
                0.0, self.batch_max_wait_s - (time.monotonic() - self.pending_since))
            if self.merge_owed:  # an owed merge waits for its time, not for the next batch
                wait = min(wait, max(0.0, self.next_merge_at - time.monotonic()))
            n = self.poll_once(int(wait * 1000) if wait else 0)
            now = time.monotonic()
            if n:
                last_data = now
            due = self.pending and (len(self.pending) >= self.batch_max_events
                                    or now - self.pending_since >= self.batch_max_wait_s)
            if due or self.merge_due():
                try:
                    if due:
                        self.flush()  # and the merge it owes
                    else:
                        self.merge(wait=False)  # owed: another instance held the lock, or the interval was not over
                    failures = 0
                except Exception:
                    # Feast or the DLQ failed: nothing of the batch (or merge) was committed; retry it with backoff
                    # (polling on keeps the group membership), give up after max_write_failures in a row
                    failures += 1
                    self.metrics.write_failures.inc()
                    log.exception("write phase failed (%d in a row)", failures)
                    if failures >= self.max_write_failures:
                        raise
                    time.sleep(min(0.1 * 2 ** failures, 1.0))
            if max_events is not None and self.totals["records"] >= max_events:
                break
            if until_caught_up and not self.pending and not self.merge_owed and self.caught_up():
                break
            if until_caught_up:
                mark = (self.totals["records"], tuple(self.assignment), len(self.pending))
                if mark != progress_mark:
                    progress_mark, last_progress = mark, now
                elif now - last_progress > stall_s:
                    raise RuntimeError(
                        f"not caught up after {stall_s:.0f}s without progress (assigned partitions "
                        f"{self.assignment}, high watermark - applied: {self._lag_text()}): is the broker at "
                        f"{self.settings.kafka.bootstrap_servers} answering?")
            if idle_exit_s is not None and not self.pending and now - last_data >= idle_exit_s:
                break
        if self.pending:
            self.flush()
        if self.merge_owed:
            self.merge(wait=True)
        return dict(self.totals)

    def caught_up(self) -> bool:
        if not self.assignment:
            return False
        for p in self.assignment:
            hw = self.consumer.highwater(_tp(self.topic, p))
            if hw is None or self.applied.get(p, 0) < hw:
                return False
        return True

    def _lag_text(self) -> str:
        return ", ".join(f"{p}: {self.consumer.highwater(_tp(self.topic, p))} - {self.applied.get(p)}"
                         for p in self.assignment) or "none"

    def _update_lag(self) -> None:
        for p in self.assignment:
            hw = self.consumer.highwater(_tp(self.topic, p))
            if hw is not None:
                self.metrics.lag.labels(str(p)).set(max(0, hw - self.applied.get(p, hw)))


def run_processor(settings: Settings, group: str | None = None, metrics_port: int | None = None,
                  batch_max_events: int | None = None, batch_max_wait_ms: int | None = None,
                  until_caught_up: bool = False, idle_exit_s: float | None = None,
                  max_events: int | None = None) -> dict[str, int]:
    """The ``recast stream process`` entry point: SIGTERM/SIGINT stop it after the current batch."""
    from features.feast_repo import ensure_feature_store

    ensure_feature_store(settings)
    import gc

    # the imported libraries (Feast, pandas, pyarrow) are never garbage: frozen, collections do not scan them.
    # Collect first: garbage frozen would live forever, and a process forked from one that had read the
    # online store (the tests' harness) inherits that reader's SQLite connection as garbage -- kept open,
    # its copied lock bookkeeping would be reused by this process's own connection to the same file.
    gc.collect()
    gc.freeze()
    proc = StreamProcessor(settings, group, batch_max_events=batch_max_events, batch_max_wait_ms=batch_max_wait_ms)
    port = settings.stream.metrics_port if metrics_port is None else metrics_port
    if port:
        from prometheus_client import start_http_server

        try:
            start_http_server(port, addr=settings.stream.metrics_host, registry=proc.registry)
        except OSError as exc:
            proc.close(flush=False)
            raise RuntimeError(f"metrics port {settings.stream.metrics_host}:{port} is unavailable ({exc}); "
                               "give each instance on a host its own --metrics-port (0: none)") from exc
    signal.signal(signal.SIGTERM, proc.request_stop)
    signal.signal(signal.SIGINT, proc.request_stop)
    proc.start()
    try:
        totals = proc.run(max_events=max_events, idle_exit_s=idle_exit_s, until_caught_up=until_caught_up)
    except BaseException:
        proc.close(flush=False)  # the failed batch stays uncommitted: the next run reads it again
        raise
    proc.close()
    return totals
