"""Processor state in Redis, shared by the instances of a consumer group on any number of hosts.

The same interface and the same guarantees as the SQLite :class:`~streaming.state.StateStore`
(``stream.state_store: redis``), so a partition that moves to an instance on another host
keeps its history:

* :meth:`RedisStateStore.write_phase` locks the partitions it writes (``SET NX PX`` of
  ``lock:p:<partition>`` with a random token), and :meth:`~RedisStateStore.merge_phase` the
  group's one merge lock (``lock:merge``). Instances own disjoint partitions, so their write
  phases run side by side; only the merges of entities spread over several partitions (item
  popularity) are serialized (streaming/merge_phase.py), and an instance that finds the merge
  lock taken does not wait for it;
* reads inside a phase go to Redis; writes are buffered and applied at the end by one script
  that first checks every lock still holds this phase's token: all of them or none (a
  script runs atomically). An instance whose lock expired (paused longer than ``lock_ms``)
  and was taken over finds another token; its writes are refused and its batch retried, so
  a stale instance never overwrites the new owner's state (a fencing check, not a lease
  that is merely hoped to hold);
* a crash (``kill -9``) anywhere before the script leaves the state as it was; the locks
  expire after ``lock_ms``.

Layout: the partials of one partition are one hash per kind (``u:<partition>``,
``i:<partition>``; field: the user or item id; value: the same JSON as the SQLite
store), and ``partitions`` is the set of partitions holding partials. A batch of
5,000 users is then one ``HMGET`` and one ``HSET`` per partition, not 5,000 of each
(packed by streaming/redis_wire.py), and forgetting a partition deletes two keys.
Watermarks, dead-letter marks and log ids are hashes per topic; ``dirty:u``/``dirty:i`` hold
the entities whose merged row is owed to the online store (field: id, value: the token of
the phase that marked it).
"""

from __future__ import annotations

import time
import uuid
from contextlib import contextmanager
from typing import Iterable, Iterator

from streaming.features import ItemPartial, UserPartial
from streaming.redis_wire import check, command, execute

_RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 1
"""
_FENCED_WRITES = """
for i = 1, #KEYS - 1 do
  if redis.call('GET', KEYS[i]) ~= ARGV[1] then
    return redis.error_reply('FENCED the state lock ' .. KEYS[i] .. ' expired and was taken over; the batch is retried')
  end
end
if redis.call('EXISTS', KEYS[#KEYS]) == 1 then
  return redis.error_reply('FENCED a layout-2 processor of this group holds its group lock; the batch is retried')
end
local at = 2
while at <= #ARGV do
  local n = tonumber(ARGV[at])
  if ARGV[at + 1] == 'HDELIFEQ' then
    local key = ARGV[at + 2]
    for j = at + 3, at + n, 2 do
      if redis.call('HGET', key, ARGV[j]) == ARGV[j + 1] then redis.call('HDEL', key, ARGV[j]) end
    end
  else
    redis.call(unpack(ARGV, at + 1, at + n))
  end
  at = at + n + 1
end
return 1
"""
"""The buffered writes, each as its argument count and its arguments, applied only while every lock
(KEYS but the last) holds this instance's token and the last, layout 2's group lock, is not held by an
older processor during a rolling upgrade (checked and applied atomically: a script is never interleaved).
``HDELIFEQ key field token ...`` deletes each field whose value is still ``token``."""
LAYOUT = "3"
"""The key layout's version (``<prefix>layout``): 2 = partials in one hash per (kind, partition)
under one group lock; 3 = the same hashes, a lock per partition and one for the merge, and the
``dirty:<kind>`` hashes. A layout-2 state is read as it is (same partials) and marked 3 on the
first commit, so a layout-2 processor started afterwards refuses it instead of locking differently.
Layout-2 processors still running (a rolling upgrade) hold the group lock ``lock`` in their write
phases: a commit of this version is refused while it is held, so the two never apply the same
records; item rows written by the older ones may lag until the item's next merge. An older state (one hash per entity)
is refused, never misread."""
READABLE = ("2", "3")
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
        self.merge_lock_key = self.prefix + "lock:merge"
        self.lock_ms, self.lock_wait_s = lock_ms, lock_wait_s
        self.orphan_age_s = 2 * lock_ms / 1e3
        """An offline part younger than this may belong to another instance's phase that can still
        commit (its lock has not expired yet): the orphan cleanup leaves it for later."""
        self.token: str | None = None
        self._locks: list[str] = []
        self._writes: list[list] = []

    def close(self) -> None:
        self.client.close()

    def partition_lock_key(self, partition: int) -> str:
        return f"{self.prefix}lock:p:{partition}"

    # -- phases: locks, buffered writes, one fenced script
    @contextmanager
    def write_phase(self, partitions: Iterable[int]) -> Iterator["RedisStateStore"]:
        """Locks ``partitions`` (the ones the phase writes; sorted, so two phases never wait on each
        other in a circle), then as the module docstring says."""
        keys = [self.partition_lock_key(p) for p in sorted(set(partitions))]
        with self._phase(keys, wait=True) as st:
            yield st  # type: ignore[misc]

    @contextmanager
    def merge_phase(self, wait: bool = True) -> Iterator["RedisStateStore | None"]:
        """The group's one merge lock (streaming/merge_phase.py); ``None`` when ``wait`` is false and
        another instance holds it."""
        with self._phase([self.merge_lock_key], wait=wait) as st:
            yield st

    @contextmanager
    def _phase(self, keys: list[str], wait: bool) -> Iterator["RedisStateStore | None"]:
        if self.token is not None:
            raise RuntimeError("state phases do not nest: the inner one would take the outer one's writes")
        token = uuid.uuid4().hex
        held = self._acquire(keys, token, wait)
        if held is None:
            yield None
            return
        self.token, self._locks, self._writes = token, held, []
        try:
            self._check_layout()
            yield self
            if self._writes:
                self._write("SET", self.prefix + "layout", LAYOUT)
            self._commit(token)
        finally:
            self.token, self._locks, self._writes = None, [], []
            if held:
                self.client.eval(_RELEASE, len(held), *held, token)

    def _acquire(self, keys: list[str], token: str, wait: bool) -> list[str] | None:
        deadline = time.monotonic() + self.lock_wait_s
        held: list[str] = []
        for key in keys:
            while not self.client.set(key, token, nx=True, px=self.lock_ms):
                if not wait or time.monotonic() > deadline:
                    if held:
                        self.client.eval(_RELEASE, len(held), *held, token)
                    if not wait:
                        return None
                    raise TimeoutError(f"the state lock {key} was held for over {self.lock_wait_s:.0f} s")
                time.sleep(0.01)
            held.append(key)
        return held

    _layout_checked = False

    def _check_layout(self) -> None:
        """A group state written by an older key layout: stop with what to do (once per process)."""
        if self._layout_checked:
            return
        found = self.client.get(self.prefix + "layout")
        locks = self.prefix.encode() + b"lock"
        if found is None and any(not k.startswith(locks)
                                 for k in self.client.scan_iter(match=self.prefix + "*", count=1000)):
            raise RuntimeError(f"the stream state at {self.path} has an older key layout (no layout marker); "
                               "run `recast stream reset` and replay the events topic to rebuild it")
        if found is not None and found.decode() not in READABLE:
            raise RuntimeError(f"the stream state at {self.path} has key layout {found.decode()}, this processor "
                               f"reads layout {LAYOUT}; run the matching version or `recast stream reset` and replay")
        self._layout_checked = True

    def _commit(self, token: str) -> None:
        if not self._writes:
            return
        if not self._locks:
            raise RuntimeError("state writes need a lock: pass the partitions the write phase writes")
        keys = [*self._locks, self.prefix + "lock"]  # the last: layout 2's group lock, which must be free
        args: list = ["EVAL", _FENCED_WRITES, len(keys), *keys, token]
        for cmd in self._writes:
            args.append(len(cmd))
            args.extend(cmd)
        (reply,) = execute(self.client, [command(args)])
        if isinstance(reply, Exception):
            if "FENCED" in str(reply):
                raise RuntimeError(f"{str(reply).removeprefix('FENCED ')}") from reply
            raise reply

    def _write(self, *cmd) -> None:
        if self.token is None:
            raise RuntimeError("state writes happen inside write_phase() or merge_phase()")
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

    def _partials(self, kind: str, keys: list[str], loads, partitions: Iterable[int] | None) -> dict:
        out: dict = {}
        parts = (self._partitions() if partitions is None else sorted(set(partitions))) if keys else []
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

    def user_partials(self, users: Iterable[str], partitions: Iterable[int] | None = None
                      ) -> dict[str, dict[int, UserPartial]]:
        """Each user's partials by partition (of ``partitions`` only, when given)."""
        return self._partials("u", list(users), UserPartial.loads, partitions)

    def item_partials(self, items: Iterable[str], partitions: Iterable[int] | None = None
                      ) -> dict[str, dict[int, ItemPartial]]:
        return self._partials("i", list(items), ItemPartial.loads, partitions)

    # -- entities whose merged row is owed to the online store (streaming/merge_phase.py)
    def mark_dirty(self, kind: str, keys: Iterable[str]) -> None:
        """Inside a phase: ``keys`` of ``kind`` (``u``/``i``) need their merged row written."""
        self._hset_many(f"dirty:{kind}", [x for k in keys for x in (k, self.token)])

    def remark_dirty(self, kind: str, keys: Iterable[str]) -> None:
        """Outside any phase: mark again (a merge whose commit failed after it wrote its rows); needs
        no lock, since marking more than needed only costs a merge."""
        token, keys = uuid.uuid4().hex, list(keys)
        for start in range(0, len(keys), _FIELDS_PER_COMMAND):
            self.client.hset(self.prefix + f"dirty:{kind}",
                             mapping=dict.fromkeys(keys[start:start + _FIELDS_PER_COMMAND], token))

    def dirty(self) -> dict[str, dict[str, str]]:
        """Kind -> {key: the token of the phase that marked it}."""
        replies = check(execute(self.client, [command(["HGETALL", self.prefix + f"dirty:{kind}"]) for kind in "ui"]))
        out = {}
        for kind, reply in zip("ui", replies):  # a flat list, or a dict from hiredis's parser
            pairs = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2])
            out[kind] = {k.decode(): v.decode() for k, v in pairs}
        return out

    def clear_dirty(self, seen: dict[str, dict[str, str]]) -> None:
        """Unmark what a merge wrote, unless a later phase marked it again (another token)."""
        for kind, keys in seen.items():
            fields = [x for kv in keys.items() for x in kv]
            for start in range(0, len(fields), 2 * _FIELDS_PER_COMMAND):
                self._write("HDELIFEQ", self.prefix + f"dirty:{kind}", *fields[start:start + 2 * _FIELDS_PER_COMMAND])

    def _hset_many(self, name: str, fields: list) -> None:
        for start in range(0, len(fields), 2 * _FIELDS_PER_COMMAND):
            self._write("HSET", self.prefix + name, *fields[start:start + 2 * _FIELDS_PER_COMMAND])

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
        owed = sum(self.client.hlen(self.prefix + f"dirty:{kind}") for kind in "ui")
        return {"users": sum(lengths[:n]), "items": sum(lengths[n:]),
                "offline_parts": self.client.scard(self.prefix + "parts"), "merges_owed": owed}
