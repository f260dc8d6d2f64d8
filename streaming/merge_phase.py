"""The merge phase: rows of entities whose partials live in several partitions, written once per merge.

Events are keyed by user, so an item's events are spread over every partition, and the
partitions over the instances of the group. Each instance's write phase
(streaming/write_phase.py) locks only its own partitions: it updates its partitions' item
partials, commits them with the watermarks, and marks the items *dirty* (with the phase's
token) in the same atomic commit. It never writes an item's row, which needs every
partition's partial. The merge phase does, under the group's one merge lock:

1. read the dirty marks (a snapshot: key -> token);
2. read those entities' partials from **every** partition, as committed;
3. merge them and write the rows to the online store (and an offline parquet part),
   waiting for the acknowledgement;
4. commit: unmark each entity whose token is still the snapshot's; one marked again
   meanwhile (a phase that committed after step 1) stays dirty for the next merge.

Why this is exact: every commit that touches an entity marks it, so the last merge
that writes its row starts after the last commit touching it (a merge snapshot from
before a commit leaves the mark in place, and the next merge, serialized after it by the
lock, re-reads). A kill -9 anywhere leaves the marks (until step 4) and the next merge of
any instance writes them; an instance starts owing a merge for that reason.

Why it scales: the write phases of instances never wait on one another, and the merge
lock is only *tried* after a batch (at most every ``stream.merge_interval_ms``, so that one
merge serves the batches in between). An instance that finds it taken goes on with its next
batch, because the holder's merge, or one after it, will write its rows; its merge stays
owed and is tried again each loop turn, and waited for at the end of ``run()`` and in
``close()``. One merge writes every entity dirty at that moment, so while instances keep each
other's merges busy, the rows of popular items are written once per merge, not once per
batch. Users are merged here only when their events reach several partitions (a producer
that does not key by user); their write phase writes their row as usual, and the merge
writes it again from every partition.

A merge whose commit is refused (its lock expired while it was paused, and another
instance merged meanwhile) may have written rows older than that instance's: it marks its
snapshot's entities dirty again, so a later merge rewrites them from the state.
"""

from __future__ import annotations

import logging
import time

from streaming.features import merge_item, merge_user
from streaming.write_phase import paused_gc

log = logging.getLogger("recast.stream")

BUSY_RETRY_S = 0.05
"""After finding the merge lock taken, try again this much later (the loop polls meanwhile)."""


class MergePhase:
    """``merge()`` of ``StreamProcessor``. Uses the processor's attributes (state, sink, group, topic,
    metrics, fault, last_n, item_vocab, write_offline, merge_owed, next_merge_at, merge_interval_s, totals)."""

    def merge_due(self) -> bool:
        """A merge is owed and its time has come: ``stream.merge_interval_ms`` after the last one ended,
        ``BUSY_RETRY_S`` after the lock was found taken."""
        return self.merge_owed and time.monotonic() >= self.next_merge_at

    def merge(self, wait: bool) -> bool:
        """Run one merge; ``False`` when ``wait`` is false and another instance holds the merge lock."""
        started = time.perf_counter()
        seen: dict[str, dict[str, str]] = {}
        pushes: list = []
        try:
            with paused_gc(), self.state.merge_phase(wait) as st:
                if st is None:
                    self.metrics.merges.labels("busy").inc()
                    self.next_merge_at = time.monotonic() + min(self.merge_interval_s, BUSY_RETRY_S)
                    return False
                seen = st.dirty()
                parts = self._write_merged(st, seen, pushes)
                self.fault.hit("after_merge_push")
                st.add_offline_parts((name, self.topic, -1, -1, -1) for name in parts)
                st.clear_dirty(seen)
        except BaseException:
            for _, _, pending in pushes:
                pending.abandon()
            if pushes and any(seen.values()):
                self._remark(seen)
            raise
        self.merge_owed = False
        self.next_merge_at = time.monotonic() + self.merge_interval_s
        self.metrics.merges.labels("done").inc()
        self.metrics.merge_seconds.observe(time.perf_counter() - started)
        self.totals["merges"] += 1
        return True

    def _write_merged(self, st, seen: dict[str, dict[str, str]], pushes: list) -> list[str]:
        """Merge and write the snapshot's rows; returns the offline parts written."""
        items, users = sorted(seen.get("i", ())), sorted(seen.get("u", ()))
        ip = st.item_partials(items) if items else {}
        up = st.user_partials(users) if users else {}
        # an entity without partials: a dirty mark whose partition was forgotten since (a log reset)
        item_rows = [{"item": i, **merge_item(list(ip[i].values()))} for i in items if ip.get(i)]
        user_rows = [{"user": u, **merge_user(list(up[u].values()), self.last_n, self.item_vocab)}
                     for u in users if up.get(u)]
        parts = []
        for view, rows, push in (("item", item_rows, self.sink.push_items), ("user", user_rows, self.sink.push_users)):
            if not rows:
                continue
            pending = push(rows)
            if pending is None:
                continue
            pushes.append((view, len(rows), pending))
            if self.write_offline:
                parts.append(self.sink.write_offline(pending.table, view, self.group))
        for view, n_rows, pending in pushes:
            self.metrics.push_seconds.labels(view).observe(pending.wait())
            self.metrics.batch_rows.labels(view).observe(n_rows)
        return parts

    def _remark(self, seen: dict[str, dict[str, str]]) -> None:
        """The merge wrote rows but did not commit: mark them again for the next merge (module docstring)."""
        try:
            for kind, keys in seen.items():
                if keys:
                    self.state.remark_dirty(kind, keys)
        except Exception:  # noqa: BLE001 - the state store is failing too; the merge's own error is raised
            log.exception("could not mark %d merged rows dirty again", sum(map(len, seen.values())))
