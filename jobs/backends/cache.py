"""A small process-safe disk cache (SQLite, one file per model) for generations and embeddings.

SQLite rather than one file per entry: a sweep's worker processes write concurrently, a job makes
tens of thousands of entries, and a single file is easy to delete or copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    """``<jobs.cache_dir>`` from the settings (default artifacts/cache)."""
    from recast.settings import Settings

    settings = Settings()
    return settings.path(settings.jobs.cache_dir)


def stable_key(*parts: Any) -> str:
    """sha256 of the parts' canonical JSON: the same request always maps to the same key."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class DiskCache:
    """``get``/``put`` of bytes by key in ``<root>/<kind>/<model>.sqlite``."""

    def __init__(self, kind: str, model_id: str, root: Path | None = None) -> None:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id)[:120] or "model"
        self.path = (root or cache_root()) / kind / f"{safe}.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._pid = -1
        self._connection()

    def _connection(self) -> sqlite3.Connection:
        """This process's connection: a sweep's worker processes are forked, and a SQLite
        connection must not cross a fork."""
        if self._pid != os.getpid():
            self._conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
            self._conn.commit()
            self._pid = os.getpid()
        return self._conn

    def get_many(self, keys: list[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for key, value in self._connection().execute(f"SELECT key, value FROM entries WHERE key IN ({marks})", chunk):
                    found[key] = value
        return found

    def put_many(self, items: dict[str, bytes]) -> None:
        if not items:
            return
        with self._lock:
            conn = self._connection()
            conn.executemany("INSERT OR REPLACE INTO entries (key, value) VALUES (?, ?)", list(items.items()))
            conn.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._connection().execute("SELECT COUNT(*) FROM entries").fetchone()[0]
