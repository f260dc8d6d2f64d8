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

from datetime import datetime, timezone
from typing import Any, Sequence

_REDIS_CHUNK = 2000
"""HSETs per pipeline round trip (bounds the client's buffer, not the batch)."""


def _encoders(view) -> dict[str, Any]:
    """feature name -> function(python value) -> serialized ValueProto bytes-able proto."""
    from feast.protos.feast.types.Value_pb2 import Int64List, StringList, Value
    from feast.types import Array, Int64, String
    from feast.type_map import python_values_to_proto_values

    def int64(v):
        return Value(int64_val=int(v))

    def int64_list(v):
        return Value(int64_list_val=Int64List(val=[int(x) for x in v]))

    def string_list(v):
        return Value(string_list_val=StringList(val=[str(x) for x in v]))

    out = {}
    for field in view.features:
        if field.dtype == Int64:
            out[field.name] = int64
        elif field.dtype == Array(Int64):
            out[field.name] = int64_list
        elif field.dtype == Array(String):
            out[field.name] = string_list
        else:  # any other type: Feast's own conversion, one value at a time
            vt = field.dtype.to_value_type()
            out[field.name] = lambda v, vt=vt: python_values_to_proto_values([v], vt)[0]
    return out


class OnlineWriter:
    """Writes the rows of one feature view (entity key ``key``, string ids) in one batch call."""

    def __init__(self, store, view, key: str) -> None:
        self.config = store.config
        self.view = view
        self.key = key
        self.online = store._get_provider().online_store
        self.encoders = _encoders(view)
        self.kind = getattr(self.config.online_store, "type", "sqlite")
        if self.kind == "redis":
            from feast.infra.online_stores.helpers import _mmh3
            from feast.infra.online_stores.redis import _versioned_fv_name

            name = _versioned_fv_name(view, self.config)
            self.ts_field = f"_ts:{name}".encode()
            self.field_keys = {f: _mmh3(f"{name}:{f}") for f in self.encoders}
            self.client = self.online._get_client(self.config.online_store)
        elif self.kind == "sqlite" and not self._sqlite_extras():
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

    def _entity_keys(self, ids: Sequence[str]) -> list[bytes]:
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        version = self.config.entity_key_serialization_version
        return [serialize_entity_key(EntityKey(join_keys=[self.key], entity_values=[Value(string_val=str(i))]),
                                     entity_key_serialization_version=version) for i in ids]

    def write(self, rows: Sequence[dict[str, Any]], ts_field: str) -> None:
        """Write ``rows`` (dicts with the key, every feature and ``ts_field`` in epoch ms)."""
        if not rows:
            return
        ids = [r[self.key] for r in rows]
        values = {name: [enc(r[name]) for r in rows] for name, enc in self.encoders.items()}
        stamps = [r[ts_field] for r in rows]
        if self.kind == "redis":
            self._write_redis(ids, values, stamps)
        elif self.kind == "sqlite":
            self._write_sqlite(ids, values, stamps)
        else:
            self._write_provider(ids, values, stamps)

    def _write_redis(self, ids, values, stamps) -> None:
        from google.protobuf.timestamp_pb2 import Timestamp

        project = self.config.project.encode()
        keys = self._entity_keys(ids)
        names = list(values)
        fields = [self.field_keys[n] for n in names]
        columns = [values[n] for n in names]
        pipe = self.client.pipeline(transaction=False)
        for i, (key, ms) in enumerate(zip(keys, stamps)):
            mapping = {self.ts_field: Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000).SerializeToString()}
            for field, column in zip(fields, columns):
                mapping[field] = column[i].SerializeToString()
            pipe.hset(key + project, mapping=mapping)
            if len(pipe) >= _REDIS_CHUNK:
                pipe.execute()
        pipe.execute()

    def _write_sqlite(self, ids, values, stamps) -> None:
        from feast.infra.online_stores.helpers import extract_text_and_num

        keys = self._entity_keys(ids)
        times = [_naive_utc(ms) for ms in stamps]
        rows = []
        for name, column in values.items():
            for key, value, ts in zip(keys, column, times):
                rows.append((key, name, value.SerializeToString(), extract_text_and_num(value, False)[0], ts, None))
        conn = self.online._get_conn(self.config)
        with conn:
            conn.executemany(self.sqlite_upsert, rows)

    def _write_provider(self, ids, values, stamps) -> None:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        data = [(EntityKey(join_keys=[self.key], entity_values=[Value(string_val=str(e))]),
                 {name: column[i] for name, column in values.items()},
                 datetime.fromtimestamp(ms / 1000, tz=timezone.utc), None)
                for i, (e, ms) in enumerate(zip(ids, stamps))]
        self.online.online_write_batch(self.config, self.view, data, None)


def _naive_utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).replace(tzinfo=None)
