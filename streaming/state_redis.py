"""Processor state in Redis, shared by the instances of a consumer group on any number of hosts.

The same interface and the same guarantees as the SQLite :class:`~streaming.state.StateStore`
(``stream.state_store: redis``), so a partition that moves to an instance on another host
keeps its history:

* :meth:`RedisStateStore.write_phase` takes the group's lock (``SET NX PX`` with a random
  token; the lock the SQLite store gets from ``BEGIN IMMEDIATE``), so the cross-partition
  merge of item partials never reads a half-written state;
* reads inside it go to Redis; writes are buffered and applied at the end by one script
  that first checks the lock still holds this instance's token: all of them or none
  (a script runs atomically). An instance whose lock expired (paused longer than
  ``lock_ms``) and was taken over finds another token; its writes are refused and its
  batch retried, so a stale instance never overwrites the new owner's state (a fencing
  check, not a lease that is merely hoped to hold);
* a crash (``kill -9``) anywhere before the script leaves the state as it was; the lock
  expires after ``lock_ms``.

Layout: the partials of one partition are one hash per kind (``u:<partition>``,
``i:<partition>``; field: the user or item id; value: the same JSON as the SQLite
store), and ``partitions`` is the set of partitions holding partials. A batch of
5,000 users is then one ``HMGET`` and one ``HSET`` per partition, not 5,000 of each
(packed by streaming/redis_wire.py), and forgetting a partition deletes two keys.
Watermarks, dead-letter marks and log ids are hashes per topic.
"""

from __future__ import annotations

import time
import uuid
from contextlib import contextmanager
from typing import Iterable, Iterator

from streaming.features import ItemPartial, UserPartial
from streaming.redis_wire import check, command, execute

_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_FENCED_WRITES = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED the state lock expired and was taken over; the batch is retried')
end
local at = 2
while at <= #ARGV do
  local n = tonumber(ARGV[at])
  redis.call(unpack(ARGV, at + 1, at + n))
  at = at + n + 1
end
return 1
"""
"""The buffered writes, each as its argument count and its arguments, applied only while the lock
holds this instance's token (checked and applied atomically: a script is never interleaved)."""
LAYOUT = "2"
"""The key layout's version (``<prefix>layout``): 2 = partials in one hash per (kind, partition).
An older state (one hash per entity) is refused, never misread."""
_FIELDS_PER_COMMAND = 1000
"""Field/value pairs per HSET/HMGET: a script's ``unpack`` is limited to some 8,000 values."""

def connection_kwargs(address: str) -> dict:
    """redis-py arguments of Feast's connection string ``host:port[,password=...][,ssl=true][,db=N]``
    (``feast.redis_address`` is the Feast online store's, so the state can share its server)."""
    first, *options = [part.strip() for part in address.split(",")]
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"Redis address {address!r}: expected host:port[,password=...][,ssl=true][,db=N]")
    out: dict = {"host": host, "port": int(port)}
    for option in options:
        key, _, value = option.partition("=")
        if key == "password":
            out["password"] = value
        elif key == "ssl":
            out["ssl"] = value.lower() == "true"
        elif key == "db":
            out["db"] = int(value)
    return out


class RedisStateStore:
    def __init__(self, address: str, group: str, lock_ms: int = 30_000, lock_wait_s: float = 60.0) -> None:
        import redis

        self.client = redis.Redis(**connection_kwargs(address), socket_timeout=30)
        self.prefix = f"recast:stream-state:{group}:"
        self.path = f"redis://{address.split(',')[0]}/{self.prefix}"  # where, for messages (no password)
        self.lock_key = self.prefix + "lock"
        self.lock_ms, self.lock_wait_s = lock_ms, lock_wait_s
        self._token: str | None = None
        self._writes: list[list] = []

    def close(self) -> None:
        self.client.close()

    # -- the write phase: lock, buffered writes, one fenced script
    @contextmanager
    def write_phase(self) -> Iterator["RedisStateStore"]:
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.lock_wait_s
        while not self.client.set(self.lock_key, token, nx=True, px=self.lock_ms):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the state lock {self.lock_key} was held for over {self.lock_wait_s:.0f} s")
            time.sleep(0.01)
        self._token, self._writes = token, []
        try:
            self._check_layout()
            yield self
            if self._writes:
                self._write("SET", self.prefix + "layout", LAYOUT)
            self._commit(token)
        finally:
            self._token, self._writes = None, []
            self.client.eval(_RELEASE, 1, self.lock_key, token)

    _layout_checked = False

    def _check_layout(self) -> None:
        """A group state written by an older key layout: stop with what to do (once per process)."""
        if self._layout_checked:
            return
        found = self.client.get(self.prefix + "layout")
        lock = self.lock_key.encode()
        if found is None and any(k != lock for k in self.client.scan_iter(match=self.prefix + "*", count=1000)):
            raise RuntimeError(f"the stream state at {self.path} has an older key layout (no layout marker); "
                               "run `recast stream reset` and replay the events topic to rebuild it")
        if found is not None and found.decode() != LAYOUT:
            raise RuntimeError(f"the stream state at {self.path} has key layout {found.decode()}, this processor "
                               f"reads layout {LAYOUT}; run the matching version or `recast stream reset` and replay")
        self._layout_checked = True

    def _commit(self, token: str) -> None:
        if not self._writes:
            return
        args: list = ["EVAL", _FENCED_WRITES, 1, self.lock_key, token]
        for cmd in self._writes:
            args.append(len(cmd))
            args.extend(cmd)
        (reply,) = execute(self.client, [command(args)])
        if isinstance(reply, Exception):
            if "FENCED" in str(reply):
                raise RuntimeError("the state lock expired and was taken over; the batch is retried") from reply
            raise reply

    def _write(self, *cmd) -> None:
        if self._token is None:
            raise RuntimeError("state writes happen inside write_phase()")
        self._writes.append(list(cmd))

    def _hash(self, name: str) -> dict[int, int]:
        return {int(k): int(v) for k, v in self.client.hgetall(self.prefix + name).items()}

    def _hset(self, name: str, marks: dict[int, int | str]) -> None:
        if marks:
            self._write("HSET", self.prefix + name, *[x for kv in marks.items() for x in kv])

    # -- watermarks, dead-letter marks, log ids
    def watermarks(self, topic: str) -> dict[int, int]:
        return self._hash(f"wm:{topic}")

    def set_watermarks(self, topic: str, marks: dict[int, int]) -> None:
        self._hset(f"wm:{topic}", marks)

    def committed_marks(self, topic: str) -> tuple[dict[int, int], dict[int, str]]:
        """Watermarks and log ids as committed (reads never see a write phase's buffered writes)."""
        return self.watermarks(topic), self.log_ids(topic)

    def dead_letter_marks(self, topic: str) -> dict[int, int]:
        return self._hash(f"dl:{topic}")

    def set_dead_letter_marks(self, topic: str, marks: dict[int, int]) -> None:
        current = self.dead_letter_marks(topic)  # the lock is held: no other writer in between
        self._hset(f"dl:{topic}", {p: max(o, current.get(p, 0)) for p, o in marks.items()})

    def log_ids(self, topic: str) -> dict[int, str]:
        return {int(k): v.decode() for k, v in self.client.hgetall(self.prefix + f"log:{topic}").items()}

    def set_log_ids(self, topic: str, parts: Iterable[int], topic_id: str) -> None:
        self._hset(f"log:{topic}", {p: topic_id for p in parts})

    def forget_partition(self, topic: str, part: int) -> None:
        for name in ("wm", "dl", "log"):
            self._write("HDEL", self.prefix + f"{name}:{topic}", part)
        self._write("DEL", f"{self.prefix}u:{part}", f"{self.prefix}i:{part}")
        self._write("SREM", self.prefix + "partitions", part)

    # -- partials: one hash per (kind, partition), field = entity id
    def _partitions(self) -> list[int]:
        return sorted(int(p) for p in self.client.smembers(self.prefix + "partitions"))

    def _partials(self, kind: str, keys: list[str], loads) -> dict:
        out: dict = {}
        parts = self._partitions() if keys else []
        if not parts:
            return out
        chunks = [keys[i:i + _FIELDS_PER_COMMAND * 4] for i in range(0, len(keys), _FIELDS_PER_COMMAND * 4)]
        asked = [(p, chunk) for p in parts for chunk in chunks]
        replies = check(execute(self.client, (command(["HMGET", f"{self.prefix}{kind}:{p}", *chunk])
                                              for p, chunk in asked)))
        for (p, chunk), values in zip(asked, replies):
            for k, v in zip(chunk, values):
                if v is not None:
                    by_part = out.get(k)
                    if by_part is None:
                        by_part = out[k] = {}
                    by_part[p] = loads(v)
        return out

    def user_partials(self, users: Iterable[str]) -> dict[str, dict[int, UserPartial]]:
        return self._partials("u", list(users), UserPartial.loads)

    def item_partials(self, items: Iterable[str]) -> dict[str, dict[int, ItemPartial]]:
        return self._partials("i", list(items), ItemPartial.loads)

    def _put(self, kind: str, rows: Iterable[tuple[str, int, UserPartial | ItemPartial]]) -> None:
        by_part: dict[int, list] = {}
        for key, p, partial in rows:
            fields = by_part.get(p)
            if fields is None:
                fields = by_part[p] = []
            fields.append(key)
            fields.append(partial.dumps())
        for p, fields in sorted(by_part.items()):
            for start in range(0, len(fields), 2 * _FIELDS_PER_COMMAND):
                self._write("HSET", f"{self.prefix}{kind}:{p}", *fields[start:start + 2 * _FIELDS_PER_COMMAND])
        if by_part:
            self._write("SADD", self.prefix + "partitions", *sorted(by_part))

    def put_users(self, rows: Iterable[tuple[str, int, UserPartial]]) -> None:
        self._put("u", rows)

    def put_items(self, rows: Iterable[tuple[str, int, ItemPartial]]) -> None:
        self._put("i", rows)

    # -- offline parts
    def add_offline_parts(self, rows: Iterable[tuple[str, str, int, int, int]]) -> None:
        names = [r[0] for r in rows]
        if names:
            self._write("SADD", self.prefix + "parts", *names)

    def offline_parts(self) -> set[str]:
        return {n.decode() for n in self.client.smembers(self.prefix + "parts")}

    def clear(self) -> int:
        """Delete the group's whole state (``recast stream reset``); returns the keys removed."""
        keys = list(self.client.scan_iter(match=self.prefix + "*", count=1000))
        for start in range(0, len(keys), 1000):
            self.client.delete(*keys[start:start + 1000])
        return len(keys)

    def counts(self) -> dict[str, int]:
        """(entity, partition) partials per kind, as the SQLite store counts its rows."""
        parts = self._partitions()
        lengths = check(execute(self.client, [command(["HLEN", f"{self.prefix}{kind}:{p}"])
                                              for kind in ("u", "i") for p in parts])) if parts else []
        n = len(parts)
        return {"users": sum(lengths[:n]), "items": sum(lengths[n:]),
                "offline_parts": self.client.scard(self.prefix + "parts")}
