"""The write phase of a micro-batch: watermark skip, dead letters, partial merge, Feast push, state and offset commit.

Steps 2 and 3 of streaming/processor.py, the part that makes the aggregates
idempotent under at-least-once delivery; kept apart from the consumer loop and the
rebalance handling so the ordering of writes and commits reads in one place.
``StreamProcessor`` inherits it (the ``_Failpoint`` lets the reliability tests
SIGKILL it between writes).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from streaming.dead_letter import dead_letter_record, excerpt_limit, send_dead_letters
from streaming.events import InteractionV1, InvalidEvent
from streaming.features import ItemPartial, UserPartial, merge_user

log = logging.getLogger("recast.stream")

FAULT_ENV = "RECAST_STREAM_FAULT"
"""Failpoint for the reliability tests: ``point:n`` SIGKILLs this process the n-th time it reaches
``point`` (``before_push``, ``after_push``, ``after_state_commit``; ``after_merge_push`` in
streaming/merge_phase.py)."""


@dataclass
class _Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    event: InteractionV1 | None
    error: InvalidEvent | None


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside (see :class:`MicroBatchWriter`); it runs again after."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


class _Failpoint:
    def __init__(self) -> None:
        spec = os.environ.get(FAULT_ENV, "")
        self.point, _, n = spec.partition(":")
        self.remaining = int(n or 1) if self.point else 0

    def hit(self, point: str) -> None:
        if self.point == point:
            self.remaining -= 1
            if self.remaining <= 0:
                os.kill(os.getpid(), signal.SIGKILL)


class MicroBatchWriter:
    """``flush()`` of ``StreamProcessor``: apply ``self.pending`` to the state store, the sinks and Kafka.

    The cyclic garbage collector is paused while a batch is decoded and written: a batch of
    5,000 distinct users allocates some 10^5 small acyclic objects (events, partials, rows,
    encoded values) that reference counting frees, and the collections they would trigger scan
    every live object of the process (Feast, pandas, the batch) -- measured at 15-30% of the
    batch's CPU time at a million users. It runs again between batches.

    Uses the processor's attributes (settings, topic, group, state, sink, dlq, consumer, metrics, log_ids,
    fault, last_n, item_vocab, write_offline, pending, applied, totals, merge_owed, _cleanups) and its
    ``_update_lag()`` and ``merge()`` (streaming/merge_phase.py).
    """

    def flush(self) -> int:
        """Write the pending micro-batch (see the module docstring); returns the records it applied."""
        with self.pending_lock:
            batch, self.pending = self.pending, []
        if not batch:
            return 0
        try:
            with paused_gc():
                applied = self._write(batch)
        except BaseException:
            with self.pending_lock:
                self.pending = batch + self.pending  # not applied: retried by the next flush (or replayed)
            raise
        if self.merge_due():
            self.merge(wait=False)  # another instance merging: retried by the loop (streaming/merge_phase.py)
        return applied

    def _remove_orphan_parts(self, st) -> None:
        """Delete the group's offline parts that no committed phase recorded (due after an assignment).

        A part is written before its phase commits, so a part younger than the store's
        ``orphan_age_s`` may be another instance's phase in flight (Redis: its partition lock has
        not expired; SQLite: 0, the host lock excludes it): left for the second cleanup the
        assignment scheduled that much later.
        """
        now = time.monotonic()
        if not self._cleanups or self._cleanups[0] > now:
            return
        self._cleanups = [t for t in self._cleanups if t > now]
        removed = self.sink.remove_orphans(self.group, st.offline_parts(), min_age_s=self.state.orphan_age_s)
        if removed:
            log.warning("removed %d offline parts of batches that never committed", len(removed))

    def _write(self, batch: list[_Record]) -> int:
        started = time.perf_counter()
        marks = self.state.watermarks(self.topic)  # this instance owns the batch's partitions: a stable read
        ahead, _ = applicable(batch, marks, self.refetched)
        self._dead_letter([r for r in ahead if r.error is not None])
        with self.state.write_phase(sorted({r.partition for r in batch})) as st:
            self._remove_orphan_parts(st)
            marks = st.watermarks(self.topic)
            fresh, ends = applicable(batch, marks, self.refetched)
            beyond = [r for r in batch if r.offset >= ends[r.partition]]  # after a hole: fetched again
            skipped = len(batch) - len(fresh) - len(beyond)
            invalid = [r for r in fresh if r.error is not None]
            valid = [r for r in fresh if r.event is not None]

            users = {r.event.user for r in valid}  # type: ignore[union-attr]
            items = {r.event.item for r in valid}  # type: ignore[union-attr]
            up = st.user_partials(users)
            ip = st.item_partials(items, partitions=ends)  # this phase's partitions: merged later
            touched_u: set[tuple[str, int]] = set()
            touched_i: set[tuple[str, int]] = set()
            last_n = self.last_n
            for r in valid:
                e, part = r.event, r.partition
                assert e is not None
                by_part = up.get(e.user) or up.setdefault(e.user, {})
                (by_part.get(part) or by_part.setdefault(part, UserPartial())).apply(e.ts_ms, e.type, e.item, last_n)
                by_part = ip.get(e.item) or ip.setdefault(e.item, {})
                (by_part.get(part) or by_part.setdefault(part, ItemPartial())).apply(e.ts_ms, e.type)
                touched_u.add((e.user, part))
                touched_i.add((e.item, part))
            user_rows = [{"user": u, **merge_user(list(up[u].values()), self.last_n, self.item_vocab)}
                         for u in sorted(users)]
            spread = [u for u in users if len(up[u]) > 1]  # not keyed by user: other partitions' owners write too

            self.fault.hit("before_push")
            parts, pushes = [], []
            try:
                pending = self.sink.push_users(user_rows)
                if pending is not None:
                    pushes.append(("user", len(user_rows), pending))
                    if self.write_offline:
                        parts.append(self.sink.write_offline(pending.table, "user", self.group))
                # buffered in the state's transaction while the online store writes; committed below,
                # only once every push is acknowledged
                next_offsets = ends
                st.put_users((u, p, up[u][p]) for u, p in touched_u)
                st.put_items((i, p, ip[i][p]) for i, p in touched_i)
                st.mark_dirty("i", items)  # their rows merge every partition: streaming/merge_phase.py
                st.mark_dirty("u", spread)
                for view, n_rows, pending in pushes:
                    self.metrics.push_seconds.labels(view).observe(pending.wait())
                    self.metrics.batch_rows.labels(view).observe(n_rows)
            except BaseException:
                for _, _, pending in pushes:
                    pending.abandon()
                raise
            self.fault.hit("after_push")

            st.set_watermarks(self.topic, next_offsets)
            topic_id = self.current_topic_id()
            if topic_id:
                st.set_log_ids(self.topic, next_offsets, topic_id)
                self.log_ids.update((p, topic_id) for p in next_offsets)
            first = min(r.offset for r in batch)
            st.add_offline_parts((name, self.topic, -1, first, first + len(batch)) for name in parts)
        self.fault.hit("after_state_commit")
        self.merge_owed = self.merge_owed or bool(items or spread)
        self._commit(next_offsets)
        self.applied.update(next_offsets)
        for p in {r.partition for r in fresh}:
            self.refetched.pop(p, None)
        if beyond:
            self._fetch_again({r.partition: ends[r.partition] for r in beyond}, len(beyond))

        self.metrics.events.labels("processed").inc(len(valid))
        self.metrics.events.labels("dead_lettered").inc(len(invalid))
        if skipped:
            self.metrics.events.labels("duplicate_skipped").inc(skipped)
        self.metrics.batch_events.observe(len(batch))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.totals["records"] += len(batch)
        self.totals["processed"] += len(valid)
        self.totals["dead_lettered"] += len(invalid)
        self.totals["duplicate_skipped"] += skipped
        self.totals["batches"] += 1
        self._update_lag()
        log.debug("batch: %d records, %d users, %d items, %.1f ms", len(batch), len(user_rows), len(items),
                  (time.perf_counter() - started) * 1e3)
        return len(valid)

    def _fetch_again(self, holes: dict[int, int], records: int) -> None:
        """The batch stopped at a hole in these partitions: fetch them again from there.

        A hole is what a rebalance during a poll leaves (streaming/processor.py drops those polls'
        records, this is the second line of defence). Fetched again from exactly the hole, a
        partition whose next record is still above it has a real gap in its log (a transaction
        marker, compaction or retention): ``refetched`` lets the next batch step over it.
        """
        log.warning("batch stopped at offsets %s (records missing below the next ones); %d records are "
                    "fetched again from there", holes, records)
        self.totals["refetched"] += records
        with self.pending_lock:
            self.pending = [r for r in self.pending if r.partition not in holes]
            assigned = [p for p in holes if p in self.assignment]
        for p in assigned:
            self.consumer.seek(_tp(self.topic, p), holes[p])
            self.refetched[p] = holes[p]

    def _dead_letter(self, invalid: list[_Record]) -> None:
        """Send the dead letters not sent before (streaming/dead_letter.py), record that they were.

        Its own small transaction, ahead of the write phase: a write phase that fails
        afterwards (Feast down) is retried without sending the dead letters again.
        """
        sent = self.state.dead_letter_marks(self.topic)
        todo = [r for r in invalid if r.offset >= sent.get(r.partition, 0)]
        if not todo:
            return
        s = self.settings.stream
        limit = excerpt_limit(s.dead_letter_excerpt_bytes, s.dead_letter_max_request_bytes)
        letters = [(r.partition, r.offset, *dead_letter_record(r.value, r.key, r.error.reason, r.error.detail,  # type: ignore[union-attr]
                                                               self.topic, r.partition, r.offset, limit))
                   for r in todo]
        topic = self.settings.kafka.dead_letter_topic
        acked, error = send_dead_letters(self.dlq, topic, letters, timeout_s=s.dead_letter_timeout_s)
        if acked:
            with self.state.write_phase(acked) as st:
                st.set_dead_letter_marks(self.topic, acked)
        for r in todo:
            if r.offset < acked.get(r.partition, 0):
                self.metrics.dead_letter.labels(r.error.reason).inc()  # type: ignore[union-attr]
        if error is not None:
            raise RuntimeError(f"the dead-letter topic {topic!r} did not take {len(todo)} records ({error!r}); "
                               "the batch is retried and nothing of it is committed") from error

    def _commit(self, next_offsets: dict[int, int]) -> None:
        from kafka.errors import CommitFailedError, KafkaError
        from kafka.structs import OffsetAndMetadata

        offsets = {_tp(self.topic, p): OffsetAndMetadata(o, "", -1) for p, o in next_offsets.items()}
        try:
            self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # the state already holds the watermarks: the redelivered records will be skipped
            self.metrics.commit_failures.inc()
            log.warning("offset commit failed (%s); records will be redelivered and skipped", exc)


def applicable(batch: list[_Record], marks: dict[int, int],
               refetched: dict[int, int] | None = None) -> tuple[list[_Record], dict[int, int]]:
    """The records a batch may apply (in batch order) and each partition's next offset after them.

    A watermark ``w`` says "every offset below ``w`` is applied", so a batch applies, per
    partition, only the run of consecutive offsets that starts at the watermark (at the first
    record for a partition new to the state), each offset once; records below it were applied,
    records after a missing offset wait until it is fetched again. Without this, a batch holding
    offsets 120-150 of a partition whose watermark is 100 (records 100-119 dropped by a rebalance
    while 120-150 were in flight) moved the watermark to 151: records 100-119 were never applied
    by anyone. Duplicates come from a revoke and re-assign during a poll (the old position's
    records beside the same offsets fetched again after the seek); the aggregates are a function
    of the set of events, so the first copy is applied.

    ``refetched[p] == marks[p]``: the partition was fetched again from exactly its watermark and
    the log has no record there (a transaction marker, compaction, retention): the run starts at
    the next record.
    """
    first: dict[tuple[int, int], _Record] = {}
    offsets: dict[int, list[int]] = {}
    for r in batch:
        if first.setdefault((r.partition, r.offset), r) is r:
            offsets.setdefault(r.partition, []).append(r.offset)
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    for p, offs in offsets.items():
        offs.sort()
        start = marks.get(p, offs[0])
        if refetched and refetched.get(p) == start and offs[-1] > start and start not in offs:
            start = next(o for o in offs if o > start)  # a real gap in the log: step over it
        end = start
        for o in offs:
            if o == end:
                end += 1
            elif o > end:
                break
        starts[p], ends[p] = start, end
    out = [r for r in batch if first[(r.partition, r.offset)] is r and starts[r.partition] <= r.offset < ends[r.partition]]
    return out, ends


def _tp(topic: str, partition: int):
    from kafka import TopicPartition

    return TopicPartition(topic, partition)
