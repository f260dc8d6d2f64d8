"""Processor state: feature partials and per-partition offset watermarks, in one SQLite file.

The watermark of a (topic, partition) is the next offset whose event has not
been applied yet. Partials and watermarks change in the same transaction, so
after any crash the state is exactly "all events below the watermarks": a
redelivered event (offset below the watermark) is skipped, which makes the
at-least-once delivery of Kafka idempotent for the aggregates.

A batch's write phase runs inside :meth:`StateStore.write_phase`
(``BEGIN IMMEDIATE``): it is also the lock that serializes the writers of
several processor instances on this host, so the merge of partials across
partitions (item popularity) never reads a half-written state, and the
offline-part cleanup never removes a part that is being written. Instances
on several hosts share :class:`~streaming.state_redis.RedisStateStore`
instead (``stream.state_store: redis``), which keeps these semantics.
"""

from __future__ import annotations

import sqlite3
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from recast.settings import Settings
from streaming.features import ItemPartial, UserPartial

_SCHEMA = """
CREATE TABLE IF NOT EXISTS watermarks (topic TEXT NOT NULL, part INTEGER NOT NULL, next_offset INTEGER NOT NULL,
                                       PRIMARY KEY (topic, part));
CREATE TABLE IF NOT EXISTS users (user TEXT NOT NULL, part INTEGER NOT NULL, state TEXT NOT NULL,
                                  PRIMARY KEY (user, part));
CREATE TABLE IF NOT EXISTS items (item TEXT NOT NULL, part INTEGER NOT NULL, state TEXT NOT NULL,
                                  PRIMARY KEY (item, part));
CREATE TABLE IF NOT EXISTS dead_letter_marks (topic TEXT NOT NULL, part INTEGER NOT NULL, next_offset INTEGER NOT NULL,
                                              PRIMARY KEY (topic, part));
CREATE TABLE IF NOT EXISTS logs (topic TEXT NOT NULL, part INTEGER NOT NULL, topic_id TEXT NOT NULL,
                                 PRIMARY KEY (topic, part));
CREATE TABLE IF NOT EXISTS offline_parts (name TEXT PRIMARY KEY, topic TEXT, part INTEGER, first_offset INTEGER,
                                          last_offset INTEGER);
CREATE TABLE IF NOT EXISTS dirty (kind TEXT NOT NULL, key TEXT NOT NULL, token TEXT NOT NULL, PRIMARY KEY (kind, key));
"""
_CHUNK = 500
"""Entities per IN (...) query (SQLite's variable limit is 32766; smaller keeps plans simple)."""


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()
        if self._listener_db is not None:
            self._listener_db.close()

    _listener_db: sqlite3.Connection | None = None

    def committed_marks(self, topic: str) -> tuple[dict[int, int], dict[int, str]]:
        """Watermarks and log ids as committed, read on a connection of their own.

        For the consumer's rebalance listener, which runs on the Kafka client's IO thread while
        the main thread may be inside :meth:`write_phase` on ``self.db``: a read there would see
        that batch's uncommitted watermarks (which a rollback then takes back), and a statement
        still stepping on the shared connection makes the main thread's ``COMMIT`` fail.
        """
        if self._listener_db is None:
            self._listener_db = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None,
                                                check_same_thread=False)
        db = self._listener_db
        marks = {int(p): int(o) for p, o in db.execute(
            "SELECT part, next_offset FROM watermarks WHERE topic = ?", (topic,)).fetchall()}
        logs = {int(p): str(t) for p, t in db.execute(
            "SELECT part, topic_id FROM logs WHERE topic = ?", (topic,)).fetchall()}
        return marks, logs

    orphan_age_s = 0.0
    """Offline parts younger than this may belong to a write phase still running elsewhere: none
    here, since a part is written and recorded inside one transaction holding the host's lock."""

    @contextmanager
    def write_phase(self, partitions: Iterable[int] = ()) -> Iterator["StateStore"]:
        """One transaction holding the host-wide writer lock; commits on success, rolls back on error.

        ``partitions``: the ones this phase writes (a Redis state locks just those); one
        host's SQLite file has a single writer lock for all of them.
        """
        with self._transaction(wait=True) as st:
            yield st  # type: ignore[misc]

    @contextmanager
    def merge_phase(self, wait: bool = True) -> Iterator["StateStore | None"]:
        """The cross-partition merge's transaction (streaming/merge_phase.py); ``None`` when ``wait``
        is false and another instance on this host holds the writer lock."""
        with self._transaction(wait) as st:
            yield st

    @contextmanager
    def _transaction(self, wait: bool) -> Iterator["StateStore | None"]:
        if not self._begin(wait):
            yield None
            return
        self.token = uuid.uuid4().hex
        try:
            yield self
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _begin(self, wait: bool) -> bool:
        """``BEGIN IMMEDIATE`` (the writer lock); without ``wait``, ``False`` at once when it is held."""
        if wait:
            self.db.execute("BEGIN IMMEDIATE")
            return True
        self.db.execute("PRAGMA busy_timeout = 0")
        try:
            self.db.execute("BEGIN IMMEDIATE")
            return True
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            return False
        finally:
            self.db.execute("PRAGMA busy_timeout = 60000")

    # -- entities whose merged row is owed to the online store (streaming/merge_phase.py)
    def mark_dirty(self, kind: str, keys: Iterable[str]) -> None:
        """Inside a write phase: ``keys`` of ``kind`` (``u``/``i``) need their merged row written."""
        self.db.executemany("INSERT OR REPLACE INTO dirty (kind, key, token) VALUES (?, ?, ?)",
                            [(kind, k, self.token) for k in keys])

    def remark_dirty(self, kind: str, keys: Iterable[str]) -> None:
        """Outside any phase: mark again (a merge whose commit failed after it wrote its rows)."""
        token = uuid.uuid4().hex
        self.db.executemany("INSERT OR REPLACE INTO dirty (kind, key, token) VALUES (?, ?, ?)",
                            [(kind, k, token) for k in keys])

    def dirty(self) -> dict[str, dict[str, str]]:
        """Kind -> {key: the token of the phase that marked it}."""
        out: dict[str, dict[str, str]] = {"u": {}, "i": {}}
        for kind, key, token in self.db.execute("SELECT kind, key, token FROM dirty"):
            out.setdefault(kind, {})[key] = token
        return out

    def clear_dirty(self, seen: dict[str, dict[str, str]]) -> None:
        """Unmark what a merge wrote, unless a later phase marked it again (another token)."""
        self.db.executemany("DELETE FROM dirty WHERE kind = ? AND key = ? AND token = ?",
                            [(kind, k, t) for kind, keys in seen.items() for k, t in keys.items()])

    # -- watermarks
    def watermarks(self, topic: str) -> dict[int, int]:
        rows = self.db.execute("SELECT part, next_offset FROM watermarks WHERE topic = ?", (topic,))
        return {int(p): int(o) for p, o in rows}

    def set_watermarks(self, topic: str, marks: dict[int, int]) -> None:
        self.db.executemany(
            "INSERT INTO watermarks (topic, part, next_offset) VALUES (?, ?, ?) "
            "ON CONFLICT (topic, part) DO UPDATE SET next_offset = excluded.next_offset",
            [(topic, p, o) for p, o in marks.items()],
        )

    def dead_letter_marks(self, topic: str) -> dict[int, int]:
        """Next source offset per partition whose dead letter is not acknowledged yet (streaming/dead_letter.py)."""
        rows = self.db.execute("SELECT part, next_offset FROM dead_letter_marks WHERE topic = ?", (topic,))
        return {int(p): int(o) for p, o in rows}

    def set_dead_letter_marks(self, topic: str, marks: dict[int, int]) -> None:
        self.db.executemany(
            "INSERT INTO dead_letter_marks (topic, part, next_offset) VALUES (?, ?, ?) "
            "ON CONFLICT (topic, part) DO UPDATE SET next_offset = MAX(next_offset, excluded.next_offset)",
            [(topic, p, o) for p, o in marks.items()],
        )

    # -- log identity: the broker's topic id of the log the watermarks count in
    def log_ids(self, topic: str) -> dict[int, str]:
        rows = self.db.execute("SELECT part, topic_id FROM logs WHERE topic = ?", (topic,))
        return {int(p): str(t) for p, t in rows}

    def set_log_ids(self, topic: str, parts: Iterable[int], topic_id: str) -> None:
        self.db.executemany("INSERT OR REPLACE INTO logs (topic, part, topic_id) VALUES (?, ?, ?)",
                            [(topic, p, topic_id) for p in parts])

    def forget_partition(self, topic: str, part: int) -> None:
        """Drop everything applied from one partition (its log was reset): partials, watermark, marks."""
        for table in ("watermarks", "dead_letter_marks", "logs"):
            self.db.execute(f"DELETE FROM {table} WHERE topic = ? AND part = ?", (topic, part))
        # partials carry no topic: a state store serves one events topic (one file per consumer group)
        self.db.execute("DELETE FROM users WHERE part = ?", (part,))
        self.db.execute("DELETE FROM items WHERE part = ?", (part,))

    # -- partials
    def user_partials(self, users: Iterable[str], partitions: Iterable[int] | None = None
                      ) -> dict[str, dict[int, UserPartial]]:
        """Each user's partials by partition (of ``partitions`` only, when given)."""
        wanted = None if partitions is None else set(partitions)
        out: dict[str, dict[int, UserPartial]] = {}
        for key, part, state in self._select("users", "user", list(users)):
            if wanted is None or part in wanted:
                out.setdefault(key, {})[part] = UserPartial.loads(state)
        return out

    def item_partials(self, items: Iterable[str], partitions: Iterable[int] | None = None
                      ) -> dict[str, dict[int, ItemPartial]]:
        wanted = None if partitions is None else set(partitions)
        out: dict[str, dict[int, ItemPartial]] = {}
        for key, part, state in self._select("items", "item", list(items)):
            if wanted is None or part in wanted:
                out.setdefault(key, {})[part] = ItemPartial.loads(state)
        return out

    def put_users(self, rows: Iterable[tuple[str, int, UserPartial]]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO users (user, part, state) VALUES (?, ?, ?)",
                            [(u, p, s.dumps()) for u, p, s in rows])

    def put_items(self, rows: Iterable[tuple[str, int, ItemPartial]]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO items (item, part, state) VALUES (?, ?, ?)",
                            [(i, p, s.dumps()) for i, p, s in rows])

    def _select(self, table: str, column: str, keys: list[str]) -> Iterator[tuple[str, int, str]]:
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start:start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            yield from self.db.execute(f"SELECT {column}, part, state FROM {table} WHERE {column} IN ({marks})", chunk)

    # -- offline parts
    def add_offline_parts(self, rows: Iterable[tuple[str, str, int, int, int]]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO offline_parts VALUES (?, ?, ?, ?, ?)", list(rows))

    def offline_parts(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT name FROM offline_parts")}

    def counts(self) -> dict[str, int]:
        out = {t: int(self.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
               for t in ("users", "items", "offline_parts")}
        out["merges_owed"] = int(self.db.execute("SELECT COUNT(*) FROM dirty").fetchone()[0])
        return out


def state_path(settings: Settings, group: str) -> Path:
    return settings.path(settings.stream.state_dir) / f"{group}.sqlite"


def open_state(settings: Settings, group: str):
    """The group's state store: the SQLite file (one host) or Redis (several hosts), ``stream.state_store``."""
    if settings.stream.state_store == "redis":
        from streaming.state_redis import RedisStateStore

        return RedisStateStore(settings.stream.state_redis_address or settings.feast.redis_address, group,
                               lock_ms=settings.stream.state_lock_ms)
    return StateStore(state_path(settings, group))
