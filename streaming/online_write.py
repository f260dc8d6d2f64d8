"""One bulk write per feature view per micro-batch into the Feast online store, in Feast's own format.

``FeatureStore.push`` / ``provider.ingest_df`` turn the batch into a DataFrame,
then Arrow, then protobuf values row by row, and the online stores then write
row by row: with the SQLite store one ``INSERT`` per feature per entity, with
Redis a first round trip that reads every entity's stored timestamp. At 5,000
distinct users per batch that is most of the batch (about 0.1-0.15 ms per row).
:class:`OnlineWriter` builds the protobuf values straight from the row dicts
and writes the whole view in one call of the store's batch interface:

* SQLite: one ``executemany`` of Feast's own upsert statement (same table,
  same columns, same serialization);
* Redis: one pipeline of ``HSET``s, keyed and encoded exactly like Feast's
  ``RedisOnlineStore.online_write_batch`` (``_redis_key``, ``_mmh3`` field
  names, ``_ts:<view>`` timestamps), so ``get_online_features`` reads them.
  Unlike Feast's default it does not skip a row whose timestamp is not newer
  than the stored one: the processor is the one ordered writer of these views
  (its write phase holds the state store's lock), and a row recomputed with
  the same event time but new values (an event at the same millisecond, a
  replay after a log reset) must replace the stored row, not be dropped.

Other online store types fall back to the provider's ``online_write_batch``
with the same protobuf rows. Reads are Feast's own everywhere; the integration
tests read every written row back through ``get_online_features``.
"""

from __future__ import annotations

import struct
from datetime import datetime, timezone
from typing import Any, Sequence

_REDIS_CHUNK = 2000
"""HSETs per pipeline round trip when the writer cannot use one script call (Redis Cluster)."""
_SMALL_INTS = range(-1, 4096)
"""Counts repeat: their serialized values are computed once."""

_HSET_ALL = """
local n = tonumber(ARGV[1])
local at = 2
for k = 1, #KEYS do
  redis.call('HSET', KEYS[k], unpack(ARGV, at, at + 2 * n - 1))
  at = at + 2 * n
end
return #KEYS
"""
"""One script call writes every entity of a view: one command and one reply per batch instead of
one HSET (packed and parsed in Python) per entity, and readers never see half a batch."""


def _encoders(view) -> dict[str, tuple[Any, bool]]:
    """feature name -> (python value -> serialized ValueProto, whether SQLite's value_text is str(value))."""
    from feast.protos.feast.types.Value_pb2 import Int64List, StringList, Value
    from feast.types import Array, Int64, String
    from feast.type_map import python_values_to_proto_values

    small = {v: Value(int64_val=v).SerializeToString() for v in _SMALL_INTS}

    def int64(v):
        b = small.get(v)
        return b if b is not None else Value(int64_val=int(v)).SerializeToString()

    def int64_list(v):
        return Value(int64_list_val=Int64List(val=[int(x) for x in v])).SerializeToString()

    def string_list(v):
        return Value(string_list_val=StringList(val=[str(x) for x in v])).SerializeToString()

    out = {}
    for f in view.features:
        if f.dtype == Int64:
            out[f.name] = (int64, True)
        elif f.dtype == Array(Int64):
            out[f.name] = (int64_list, False)
        elif f.dtype == Array(String):
            out[f.name] = (string_list, False)
        else:  # any other type: Feast's own conversion, one value at a time (SQLite: its own writer)
            vt = f.dtype.to_value_type()
            out[f.name] = (lambda v, vt=vt: python_values_to_proto_values([v], vt)[0].SerializeToString(), None)
    return out


def _bulk(value: bytes) -> bytes:
    """One argument of a Redis command in the wire protocol (RESP bulk string)."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


class OnlineWriter:
    """Writes the rows of one feature view (entity key ``key``, string ids) in one batch call."""

    def __init__(self, store, view, key: str) -> None:
        self.config = store.config
        self.view = view
        self.key = key
        self.online = store._get_provider().online_store
        self.encoders = _encoders(view)
        self._key_prefix: tuple[bytes, int] | bool | None = None
        self.kind = getattr(self.config.online_store, "type", "sqlite")
        if self.kind == "redis":
            from feast.infra.online_stores.helpers import _mmh3
            from feast.infra.online_stores.redis import _versioned_fv_name

            name = _versioned_fv_name(view, self.config)
            self.ts_field = f"_ts:{name}".encode()
            self.field_keys = [_mmh3(f"{name}:{f}") for f in self.encoders]
            self.client = self.online._get_client(self.config.online_store)
            self.one_call = getattr(self.config.online_store, "redis_type", "redis") == "redis"  # not a cluster
        elif (self.kind == "sqlite" and not self._sqlite_extras()
              and all(text is not None for _, text in self.encoders.values())):
            from feast.infra.online_stores.sqlite import _table_id

            table = _table_id(self.config.project, view,
                              getattr(self.config.registry, "enable_online_feature_view_versioning", False))
            self.sqlite_upsert = (
                f'INSERT INTO "{table}" (entity_key, feature_name, value, value_text, event_ts, created_ts) '
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
                "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, "
                "created_ts = excluded.created_ts"
            )
        else:
            self.kind = "provider"

    def _sqlite_extras(self) -> bool:
        """Feast SQLite options that add columns (vectors, numeric copies): left to Feast's own writer."""
        o = self.config.online_store
        return bool(getattr(o, "vector_enabled", False) or getattr(o, "enable_openai_compatible_store", False))

    def _feast_entity_key(self, entity_id: str) -> bytes:
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        return serialize_entity_key(EntityKey(join_keys=[self.key], entity_values=[Value(string_val=entity_id)]),
                                    entity_key_serialization_version=self.config.entity_key_serialization_version)

    def _entity_keys(self, ids: Sequence[str]) -> list[bytes]:
        """Feast's ``serialize_entity_key`` of one string join key, as one concatenation per id (the
        version-3 layout: key count, key type, key, value type, value); checked against Feast's own
        function once, which is used instead when the layouts differ (another serialization version)."""
        if self._key_prefix is None:
            from feast.value_type import ValueType

            name = self.key.encode()
            string = ValueType.STRING.value
            prefix = struct.pack("<III", 1, string, len(name)) + name
            probe = "u-\u00e9-1"
            mine = prefix + struct.pack("<II", string, len(probe.encode())) + probe.encode()
            self._key_prefix = (prefix, string) if mine == self._feast_entity_key(probe) else False
        if self._key_prefix is False:
            return [self._feast_entity_key(str(i)) for i in ids]
        prefix, string = self._key_prefix
        pack = struct.Struct("<II").pack
        out = []
        for i in ids:
            b = str(i).encode()
            out.append(prefix + pack(string, len(b)) + b)
        return out

    def write(self, rows: Sequence[dict[str, Any]], ts_field: str) -> None:
        """Write ``rows`` (dicts with the key, every feature and ``ts_field`` in epoch ms)."""
        if not rows:
            return
        ids = [r[self.key] for r in rows]
        stamps = [r[ts_field] for r in rows]
        if self.kind == "redis":
            self._write_redis(rows, ids, stamps)
        elif self.kind == "sqlite":
            self._write_sqlite(rows, ids, stamps)
        else:
            self._write_provider(rows, ids, stamps)

    def _write_redis(self, rows, ids, stamps) -> None:
        from google.protobuf.timestamp_pb2 import Timestamp

        project = self.config.project.encode()
        keys = [k + project for k in self._entity_keys(ids)]
        encoders = [(enc, name) for name, (enc, _) in self.encoders.items()]

        def values(row, ms) -> list[bytes]:
            out = [Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000).SerializeToString()]
            out.extend(enc(row[name]) for enc, name in encoders)
            return out

        fields = [self.ts_field, *self.field_keys]
        if not self.one_call:
            pipe = self.client.pipeline(transaction=False)
            for key, row, ms in zip(keys, rows, stamps):
                pipe.execute_command("HSET", key, *[x for pair in zip(fields, values(row, ms)) for x in pair])
                if len(pipe) >= _REDIS_CHUNK:
                    pipe.execute()
            pipe.execute()
            return
        # one EVAL in the wire protocol, built in one pass: the field names' fragments are constant
        field_bulks = [_bulk(f) for f in fields]
        parts = [b"*%d\r\n" % (4 + len(keys) + 2 * len(fields) * len(keys)), _bulk(b"EVAL"),
                 _bulk(_HSET_ALL.encode()), _bulk(str(len(keys)).encode())]
        parts.extend(_bulk(k) for k in keys)
        parts.append(_bulk(str(len(fields)).encode()))
        for row, ms in zip(rows, stamps):
            for field, value in zip(field_bulks, values(row, ms)):
                parts.append(field)
                parts.append(b"$%d\r\n%b\r\n" % (len(value), value))
        conn = self.client.connection_pool.get_connection()
        try:
            conn.send_packed_command([b"".join(parts)])
            written = conn.read_response()
        except BaseException:
            conn.disconnect()  # a half-read reply must not be read by the next command
            raise
        finally:
            self.client.connection_pool.release(conn)
        if written != len(keys):
            raise RuntimeError(f"Redis wrote {written!r} of {len(keys)} entities of {self.view.name}")

    def _write_sqlite(self, rows, ids, stamps) -> None:
        keys = self._entity_keys(ids)
        times = [_naive_utc(ms) for ms in stamps]
        out = []
        for name, (enc, text) in self.encoders.items():
            for key, row, ts in zip(keys, rows, times):
                value = row[name]
                out.append((key, name, enc(value), str(int(value)) if text else None, ts, None))
        conn = self.online._get_conn(self.config)
        with conn:
            conn.executemany(self.sqlite_upsert, out)

    def _write_provider(self, rows, ids, stamps) -> None:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        def value(blob: bytes):
            v = Value()
            v.ParseFromString(blob)
            return v

        data = [(EntityKey(join_keys=[self.key], entity_values=[Value(string_val=str(e))]),
                 {name: value(enc(row[name])) for name, (enc, _) in self.encoders.items()},
                 datetime.fromtimestamp(ms / 1000, tz=timezone.utc), None)
                for row, e, ms in zip(rows, ids, stamps)]
        self.online.online_write_batch(self.config, self.view, data, None)


def _naive_utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).replace(tzinfo=None)
