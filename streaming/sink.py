"""Where streaming feature rows go: the Feast online store (push sources) and parquet parts (offline).

One :class:`FeastSink` call writes one micro-batch: every touched user in one
``push`` and every touched item in one ``push`` (a push costs a fixed ~10-40 ms
plus ~0.15 ms per row with the SQLite online store, so per-event pushes cap a
processor at a few dozen events/s).

``FeatureStore.push`` walks the registry on every call to find the feature
views fed by the push source (three registry listings, ~50 ms per push on this
machine), then converts the DataFrame to protobuf values through Arrow and
writes row by row. The sink resolves the views once, exactly as ``push`` does,
and writes each batch with one :class:`~streaming.online_write.OnlineWriter`
call per view (one ``executemany`` for SQLite, one pipelined write of every entity's ``HSET`` for Redis);
``resolve_once=False`` keeps the plain ``FeatureStore.push``. The same rows are written as one parquet
part per view into the folders the push sources' batch sources read, so
``get_historical_features`` sees them for training (point-in-time values as of
the micro-batch, stamped with the entity's latest event time).
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from features.feast_repo import (
    ITEM_KEY,
    ITEM_STREAM_FEATURES,
    ITEM_STREAM_PUSH,
    ITEM_STREAM_VIEW,
    STREAM_FEATURE_TYPES,
    USER_KEY,
    USER_STREAM_FEATURES,
    USER_STREAM_PUSH,
    USER_STREAM_VIEW,
    open_store,
    repo_dir,
    stream_offline_dirs,
)
from recast.settings import Settings
from streaming.online_write import OnlineWriter


def _table(key: str, rows: list[dict[str, Any]], features: tuple[str, ...], ts_field: str):
    """The rows as an Arrow table with the push sources' schema (parquet part; a DataFrame for a plain push).

    Built column by column straight from the row dicts with explicit types: a list column
    whose lists are all empty still gets its element type (pandas inference made it ``null``).
    """
    import pyarrow as pa

    arrow = {"Int64": pa.int64(), "Array(Int64)": pa.list_(pa.int64()), "Array(String)": pa.list_(pa.string())}
    columns = {key: pa.array([r[key] for r in rows], pa.string()),
               "event_timestamp": pa.array([r[ts_field] for r in rows], pa.int64())
               .cast(pa.timestamp("ms", tz="UTC")).cast(pa.timestamp("ns", tz="UTC"))}
    for name in features:
        columns[name] = pa.array([r[name] for r in rows], arrow[STREAM_FEATURE_TYPES.get(name, "Int64")])
    return pa.table(columns)


class Push:
    """One view's batch on its way to the online store: ``table`` (its rows, for the parquet part)
    is ready at once; ``wait()`` returns the seconds from the start of the write to its acknowledgement."""

    def __init__(self, table, written: list, started: float) -> None:
        self.table, self.written, self.started = table, written, started

    def wait(self) -> float:
        for w in self.written:
            w.wait()
        return time.perf_counter() - self.started

    def abandon(self) -> None:
        for w in self.written:
            w.abandon()


class FeastSink:
    def __init__(self, settings: Settings, store=None, resolve_once: bool = True) -> None:
        self.settings = settings
        self.store = store or open_store(repo_dir(settings))
        for view in (USER_STREAM_VIEW, ITEM_STREAM_VIEW):
            try:
                self.store.get_feature_view(view)
            except Exception as exc:
                raise RuntimeError(
                    f"the Feast repository has no {view!r} view ({exc}); run `recast features build` "
                    "(it re-applies the repository with the streaming push sources)"
                ) from exc
        self.user_dir, self.item_dir = stream_offline_dirs(settings)
        self.user_dir.mkdir(parents=True, exist_ok=True)
        self.item_dir.mkdir(parents=True, exist_ok=True)
        _enable_wal(settings.path(settings.feast.online_store_path))
        self._writers: dict[str, list[OnlineWriter]] = {}
        if resolve_once:
            try:
                for source, key in ((USER_STREAM_PUSH, USER_KEY), (ITEM_STREAM_PUSH, ITEM_KEY)):
                    self._writers[source] = [OnlineWriter(self.store, view, key) for view in self._views_for(source)]
            except (AttributeError, ImportError):  # a Feast without these internals: plain push
                self._writers = {}

    def _views_for(self, push_source: str) -> list:
        """The feature views whose stream source is ``push_source`` (FeatureStore.push's own rule)."""
        from feast.data_source import PushSource

        views = [fv for fv in self.store.list_feature_views(allow_cache=True)
                 if isinstance(fv.stream_source, PushSource) and fv.stream_source.name == push_source]
        if not views:
            raise RuntimeError(f"no feature view reads push source {push_source!r}")
        return views

    def push_users(self, rows: list[dict[str, Any]]) -> "Push | None":
        return self._push(USER_STREAM_PUSH, USER_KEY, rows, USER_STREAM_FEATURES, "last_event_ms")

    def push_items(self, rows: list[dict[str, Any]]) -> "Push | None":
        return self._push(ITEM_STREAM_PUSH, ITEM_KEY, rows, ITEM_STREAM_FEATURES, "item_last_event_ms")

    def _push(self, source: str, key: str, rows, features, ts_field) -> "Push | None":
        """Start writing one batch to the online store (``Push.wait()`` finishes it). Empty batches are not pushed."""
        if not rows:
            return None
        table = _table(key, rows, features, ts_field)
        started = time.perf_counter()
        writers = self._writers.get(source)
        if writers is None:
            self.store.push(source, table.to_pandas())
            return Push(table, [], started)
        return Push(table, [writer.send(rows, ts_field) for writer in writers], started)

    def write_offline(self, table, kind: str, prefix: str) -> str:
        """Write a parquet part (atomic rename); returns its file name."""
        import pyarrow.parquet as pq

        folder = self.user_dir if kind == "user" else self.item_dir
        name = f"{prefix}-{uuid.uuid4().hex}.parquet"
        partial = folder / f".{name}.partial"
        pq.write_table(table, partial)
        partial.replace(folder / name)
        return f"{kind}/{name}"

    def part_path(self, recorded: str) -> Path:
        kind, name = recorded.split("/", 1)
        return (self.user_dir if kind == "user" else self.item_dir) / name

    def remove_orphans(self, prefix: str, recorded: set[str], min_age_s: float = 0.0) -> list[str]:
        """Delete parts of this group whose batch never committed (crash between write and commit),
        except those younger than ``min_age_s`` (a phase of another instance may still commit them)."""
        removed = []
        newest = time.time() - min_age_s
        for kind, folder in (("user", self.user_dir), ("item", self.item_dir)):
            for path in folder.iterdir():
                name = path.name
                if min_age_s:
                    try:
                        if path.stat().st_mtime > newest:
                            continue
                    except FileNotFoundError:
                        continue
                if name.startswith(f".{prefix}-") and name.endswith(".partial"):
                    path.unlink(missing_ok=True)
                    removed.append(f"{kind}/{name}")
                elif name.startswith(f"{prefix}-") and f"{kind}/{name}" not in recorded:
                    path.unlink(missing_ok=True)
                    removed.append(f"{kind}/{name}")
        return removed


def _enable_wal(db: Path) -> None:
    """WAL lets the gateway read the online store while a push writes it (a persistent file setting)."""
    if not db.exists():
        return
    try:
        conn = sqlite3.connect(str(db), timeout=10.0)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()
    except sqlite3.Error:
        pass  # a store in use by an old reader keeps its mode; correctness does not depend on it
