"""The stream processor's side of a consumer-group rebalance: which records and partitions it keeps.

``StreamProcessor`` (streaming/processor.py) inherits it, as it inherits the write phase
(streaming/write_phase.py). Uses the processor's attributes (topic, group, state, consumer,
metrics, pending, pending_lock, assignment, applied, refetched, log_ids, _unseen,
_revoked_in_poll, _cleanups).
"""

from __future__ import annotations

import logging
import time
import warnings

from streaming.write_phase import _Record, _tp

log = logging.getLogger("recast.stream")


def cleanup_times(state) -> list[float]:
    """When the orphan-part cleanup is due after an assignment: now, and once more when parts
    written by phases still in flight elsewhere are old enough to tell (write_phase.py)."""
    now = time.monotonic()
    return [now, now + state.orphan_age_s] if state.orphan_age_s else [now]


class RebalanceHandling:
    # kafka-python 3 runs these on its IO thread, concurrently with the main thread's poll, decode
    # and write phase: no blocking consumer calls (commit, committed) here, nothing slow (heartbeats
    # wait too), ``pending`` and ``assignment`` only under ``pending_lock``, and state reads on the
    # store's own listener connection (``committed_marks``), never inside the main thread's transaction.
    def _on_revoked(self, revoked) -> None:
        gone = {tp.partition for tp in revoked}
        with self.pending_lock:
            kept = [r for r in self.pending if r.partition not in gone]
            dropped = len(self.pending) - len(kept)
            self.pending = kept
            self._revoked_in_poll |= gone  # what a poll in flight returns for them predates the revocation
            self.assignment = sorted(set(self.assignment) - gone)
        if dropped:
            # not applied yet: the next owner re-reads them from the watermark (idempotent)
            log.info("rebalance: %d pending records of revoked partitions %s left to their next owner",
                     dropped, sorted(gone))
        for p in gone:
            self.applied.pop(p, None)
            self.refetched.pop(p, None)
            # Feast's import turns on prometheus_client's multi-process mode, where a label set cannot
            # be removed (it warns and keeps it): zero it first so no stale lag is left behind.
            self.metrics.lag.labels(str(p)).set(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                try:
                    self.metrics.lag.remove(str(p))
                except KeyError:
                    pass
        self.metrics.assigned.set(len(self.assignment))

    def _on_assigned(self, assigned) -> None:
        marks, self.log_ids = self.state.committed_marks(self.topic)  # never waits for another instance's write
        for tp in assigned:
            if tp.partition in marks:
                # the state store is the source of truth of what was applied: fetch from there
                self.consumer.seek(tp, marks[tp.partition])
                self.applied[tp.partition] = marks[tp.partition]
            else:
                self._unseen.append(tp)
        self._cleanups = cleanup_times(self.state)  # done inside the next write phase
        with self.pending_lock:
            self.assignment = sorted(set(self.assignment) | {tp.partition for tp in assigned})
        self.metrics.assigned.set(len(self.assignment))
        log.info("assigned partitions %s of %s", self.assignment, self.topic)

    def _check_unseen(self) -> None:
        """Partitions new to this state store but with committed offsets: earlier events are missing."""
        unseen, self._unseen = self._unseen, []
        for tp in unseen:
            committed = self.consumer.committed(tp)
            if committed:
                log.error(
                    "partition %d has committed offset %d in group %s but no watermark in %s: its earlier "
                    "events are not in this state store, so its aggregates start from here. Every instance "
                    "of a group must share one state store (or run `recast stream reset` and replay).",
                    tp.partition, committed, self.group, self.state.path)

    def _add_polled(self, records: list[_Record]) -> int:
        """Append a poll's records to ``pending``, except those of partitions revoked while it was in flight.

        Those were fetched before the revocation, which already dropped the partition's earlier
        pending records: kept, they would start above the watermark, and the batch would move the
        watermark over records never applied. A partition that came back to this instance is
        fetched again from where its applied history ends.
        """
        with self.pending_lock:
            revoked, self._revoked_in_poll = self._revoked_in_poll, set()
            kept = [r for r in records if r.partition not in revoked]
            self.pending.extend(kept)
            back = [p for p in revoked if p in self.assignment]
        for r in kept:
            self.applied.setdefault(r.partition, r.offset)
        if len(kept) != len(records):
            log.info("rebalance: %d polled records of partitions %s revoked during the poll dropped",
                     len(records) - len(kept), sorted(revoked))
        if back:
            self._resume(back)
        return len(kept)

    def _resume(self, partitions: list[int]) -> None:
        """Fetch ``partitions`` again from their watermark (else the group's committed offset, else
        the beginning), dropping their pending records: main thread only (``committed`` blocks)."""
        marks = self.state.watermarks(self.topic)
        with self.pending_lock:
            self.pending = [r for r in self.pending if r.partition not in partitions]
        for p in partitions:
            tp = _tp(self.topic, p)
            if p in marks:
                self.consumer.seek(tp, marks[p])
            elif (committed := self.consumer.committed(tp)) is not None:
                self.consumer.seek(tp, committed)
            else:
                self.consumer.seek_to_beginning(tp)
            self.applied.pop(p, None)
