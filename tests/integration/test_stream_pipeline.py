"""The feature stream end to end against a real Tansu broker and a real Feast repository.

Replay -> processor -> Feast online store equals a from-scratch recomputation;
malformed events land in the dead-letter topic; a fresh click changes the next
score through the gateway; exposures + outcomes become labelled examples.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from features.feast_repo import stream_offline_dirs
from features.online import OnlineFeatureReader
from features.spec import FeatureSpec, SparseFeature
from serving.exposures import ExposurePublisher
from serving.gateway import create_app
from serving.scoring import Scorer
from streaming.events import InteractionV1, OutcomeV1, encode
from streaming.features import count_bucket, stream_sparse_features
from streaming.harness import StreamStack
from streaming.labels import build_labels
from streaming.processor import StreamProcessor
from streaming.replay import movielens_events, replay

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    with StreamStack(tmp_path_factory.mktemp("stream_home")) as s:
        yield s


def run_processor(stack: StreamStack, **kw) -> tuple[dict, CollectorRegistry]:
    registry = CollectorRegistry()
    proc = StreamProcessor(stack.settings, registry=registry, **kw).start()
    try:
        totals = proc.run(until_caught_up=True)
        totals["lag"] = {p: registry.get_sample_value("recast_stream_consumer_lag", {"partition": str(p)})
                         for p in proc.assignment}
        totals["assigned"] = registry.get_sample_value("recast_stream_assigned_partitions")
    finally:
        proc.close()
    return totals, registry


def test_replay_then_process_equals_recomputation(stack: StreamStack) -> None:
    s = stack.scope("replay")
    events = list(movielens_events(s.raw_dir))
    assert [e.ts_ms for e in events] == sorted(e.ts_ms for e in events)
    sent = replay(s.settings, events, progress=False)
    assert sent["sent"] == len(events) == 1500

    totals, registry = run_processor(s, batch_max_events=400, batch_max_wait_ms=50)
    assert totals["processed"] == len(events) and totals["dead_lettered"] == 0
    assert s.mismatches(events) == []

    value = registry.get_sample_value
    assert value("recast_stream_events_total", {"outcome": "processed"}) == len(events)
    assert value("recast_stream_batch_events_count") == totals["batches"] >= 4
    assert value("recast_stream_batch_events_sum") == len(events)
    assert value("recast_stream_push_seconds_count", {"view": "user"}) == totals["batches"]
    assert totals["lag"] == {0: 0, 1: 0, 2: 0, 3: 0}
    assert totals["assigned"] == 4

    # the offline store holds the same rows: the latest row per user is the online value
    user_dir, item_dir = stream_offline_dirs(s.settings)
    offline = pl.read_parquet(list(user_dir.glob("recast-replay-*.parquet")))
    latest = offline.sort(["event_timestamp", "events_24h"]).group_by("user").last()
    online = s.online("user", latest["user"].to_list())
    assert latest["events_24h"].to_list() == online["events_24h"]
    assert latest["last_items"].to_list() == online["last_items"]
    assert pl.read_parquet(list(item_dir.glob("recast-replay-*.parquet"))).height > 0


def test_malformed_events_go_to_the_dead_letter_topic(stack: StreamStack) -> None:
    s = stack.scope("dlq")
    valid = [InteractionV1(event_id=f"d{k}", ts_ms=1_000_000_000_000 + k * 1000, type="click" if k % 3 else "view",
                           user=f"dlq-u{k % 7}", item=f"dlq-i{k % 5}") for k in range(300)]
    good = json.loads(encode(valid[0]))
    malformed = {
        b"{truncated": "not_json",
        b"\x00\x01binary": "not_json",
        b"[]": "not_an_object",
        b'{"user": "u1"}': "missing_envelope",
        json.dumps({**good, "kind": "rating"}).encode(): "unknown_kind",
        json.dumps({**good, "v": 9}).encode(): "unsupported_version",
        json.dumps({**good, "type": "like"}).encode(): "schema_violation",
        json.dumps({**good, "ts_ms": "yesterday"}).encode(): "schema_violation",
        json.dumps({k: v for k, v in good.items() if k != "item"}).encode(): "schema_violation",
        json.dumps({**good, "type": "purchase"}).encode(): "schema_violation",
        encode(OutcomeV1(event_id="o", ts_ms=5, request_id="r", user="u", item="i", type="click")): "unexpected_kind",
    }
    mixed: list = []
    bad = list(malformed)
    for k, e in enumerate(valid):
        mixed.append(e)
        if k % 27 == 0 and bad:
            mixed.append((b"dlq-key", bad.pop()))
    mixed.append((None, b""))  # an empty value
    assert not bad
    s.send(mixed)

    totals, registry = run_processor(s, batch_max_events=100, batch_max_wait_ms=50)
    assert totals["processed"] == len(valid)
    assert totals["dead_lettered"] == len(malformed) + 1
    assert s.mismatches(valid) == []

    dlq = s.read_all(s.settings.kafka.dead_letter_topic)
    assert len(dlq) == len(malformed) + 1
    seen = {}
    for r in dlq:
        headers = {k: v.decode() for k, v in r.headers}
        assert headers["source_topic"] == s.settings.kafka.events_topic
        assert int(headers["source_offset"]) >= 0 and headers["detail"]
        seen[r.value] = headers["reason"]
    assert seen == {**malformed, b"": "empty"}  # original bytes and the reason of each
    assert registry.get_sample_value("recast_stream_dead_letter_total", {"reason": "schema_violation"}) == 4


class StreamAwareBackend:
    """A stand-in model whose score depends on the user's clicks_1h bucket (and the item id)."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.slot = spec.slot_ranges()["clicks_1h_bucket"][0]
        self.item_slot = spec.slot_ranges()["item_id"][0]
        self.seen: list[np.ndarray] = []

    async def infer(self, model, inputs):
        ids = inputs["sparse_ids"]
        self.seen.append(ids)
        return (0.1 * ids[:, self.slot] + 1e-4 * ids[:, self.item_slot]).astype(np.float32), "1"

    async def ready(self, model):
        return True


def test_a_fresh_click_changes_the_next_score(stack: StreamStack) -> None:
    s = stack.scope("fresh")
    static = FeatureSpec.load(s.settings.path(s.settings.data.features_dir) / "spec.json")
    items_vocab = len(s.item_vocab()) + 1
    spec = FeatureSpec(sparse=(*static.sparse, *stream_sparse_features(items_vocab)))
    backend = StreamAwareBackend(spec)
    reader = OnlineFeatureReader(s.settings, stream=True)
    assert reader.stream
    scorer = Scorer(reader, backend, {"dlf": spec}, "dlf", max_candidates=50)
    body = {"user_id": "3", "item_ids": ["1", "2"]}
    with TestClient(create_app(s.settings, scorer=scorer)) as client:
        before = client.post("/v1/score", json=body).json()
        bucket_before = int(backend.seen[-1][0, backend.slot])
        stranger = client.post("/v1/score", json={"user_id": "fresh-new-user", "item_ids": ["1"]}).json()
        assert stranger["cold_start"] is True
        # other tests may have left stream values for user 3: click enough to land in another bucket
        clicks = 1 if bucket_before != count_bucket(1) else 2
        now = int(time.time() * 1000)
        users = ["3"] * clicks + ["fresh-new-user"]
        s.send([InteractionV1(event_id=f"f{k}", ts_ms=now + k, type="click", user=u, item="2")
                for k, u in enumerate(users)])
        run_processor(s, batch_max_events=100, batch_max_wait_ms=20)
        after = client.post("/v1/score", json=body).json()
        after_inputs = backend.seen[-1]
        stranger_after = client.post("/v1/score", json={"user_id": "fresh-new-user", "item_ids": ["1"]}).json()
    score = {i["item_id"]: i["score"] for i in before["items"]}
    score_after = {i["item_id"]: i["score"] for i in after["items"]}
    assert int(after_inputs[0, backend.slot]) == count_bucket(clicks) != bucket_before
    assert score_after["1"] == pytest.approx(score["1"] + 0.1 * (count_bucket(clicks) - bucket_before), abs=1e-5)
    assert score_after != score  # the fresh click changed the next score
    assert stranger_after["cold_start"] is False  # known to the stream now
    assert reader.stream_features("3")["clicks_1h"] == clicks
    item_slot = spec.slot_ranges()["item_clicks_24h_bucket"][0]
    assert int(after_inputs[1, item_slot]) == count_bucket(clicks + 1)  # item 2, fresh clicks in its 24 h window


def test_exposures_and_outcomes_become_labelled_examples(stack: StreamStack) -> None:
    s = stack.scope("labels")
    registry = CollectorRegistry()
    publisher = ExposurePublisher(s.settings.kafka.bootstrap_servers, s.settings.kafka.exposures_topic,
                                  registry=registry).start()

    class Flat:
        async def infer(self, model, inputs):
            return np.linspace(0.9, 0.1, len(inputs["sparse_ids"])).astype(np.float32), "4"

        async def ready(self, model):
            return True

    scorer = Scorer(OnlineFeatureReader(s.settings), Flat(), {"dlf": FeatureSpec(
        sparse=(SparseFeature("user_id", 100, "user"), SparseFeature("item_id", 100, "item")))}, "dlf", 50)
    settings = s.settings.model_copy(deep=True)
    settings.abtest.route_requests = False  # one exposure per request: no experiment fan-out
    with TestClient(create_app(settings, scorer=scorer, exposures=publisher)) as client:
        responses = [client.post("/v1/score", json={"user_id": str(u), "item_ids": ["1", "2", "3"]}).json()
                     for u in range(1, 11)]
        deadline = time.monotonic() + 30
        while registry.get_sample_value("recast_gateway_exposures_published_total") < 10:
            assert time.monotonic() < deadline, "exposures were not delivered"
            time.sleep(0.05)
    now = int(time.time() * 1000)
    outcomes = []
    for k, r in enumerate(responses[:6]):  # the first six requests get a click on their top item
        outcomes.append(OutcomeV1(event_id=f"o{k}", ts_ms=now + 1000, request_id=r["request_id"], user=r["user_id"],
                                  item=r["items"][0]["item_id"], type="click"))
    late = responses[6]
    outcomes.append(OutcomeV1(event_id="late", ts_ms=now + 3_600_000, request_id=late["request_id"],
                              user=late["user_id"], item=late["items"][0]["item_id"], type="click"))
    s.send(outcomes, topic=s.settings.kafka.outcomes_topic)

    stats = build_labels(s.settings, window_s=1800)
    assert stats["exposures"] == 10 and stats["outcomes"] == 7
    assert stats["examples"] == 30 and stats["positives"] == 6
    labels = pl.read_parquet(stats["out"])
    top = labels.filter(pl.col("position") == 1).sort("user")
    assert top["model_version"].unique().to_list() == ["4"]
    positives = set(labels.filter(pl.col("label") == 1)["request_id"].to_list())
    assert positives == {r["request_id"] for r in responses[:6]}


def test_cli_replay_and_status(stack: StreamStack, tmp_path: Path) -> None:
    s = stack.scope("cli")
    env = s.child_env()
    out = subprocess.run([sys.executable, "-m", "recast.cli", "stream", "replay", "--limit", "300",
                          "--raw-dir", str(s.raw_dir)],
                         capture_output=True, text=True, env=env, cwd=str(s.home), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["sent"] == 300
    assert "replay -> " in out.stderr  # the progress bar
    status = subprocess.run([sys.executable, "-m", "recast.cli", "stream", "status"], capture_output=True, text=True,
                            env=env, cwd=str(s.home), timeout=120)
    assert status.returncode == 0, status.stderr[-2000:]
    body = json.loads(status.stdout)
    assert body["broker"]["healthy"] is True
    assert body["broker"]["topics"][s.settings.kafka.events_topic] == 4
    assert sum(p["high_watermark"] for p in body["partitions"]) == 300
    assert all(p["lag"] == p["high_watermark"] for p in body["partitions"])  # nothing processed yet


def test_local_broker_up_status_down(tmp_path: Path) -> None:
    from recast.stack import stack_status
    from streaming.broker import broker_down, broker_status, broker_up
    from streaming.harness import free_port, stack_settings

    settings = stack_settings(tmp_path, free_port())
    up = broker_up(settings)
    try:
        assert up["pid"] and up["external"] is False
        assert up["topics"] == {"recast.events": 4, "recast.exposures": 4, "recast.outcomes": 4,
                                "recast.events.dlq": 1}
        status = stack_status(settings)["broker"]
        assert status["healthy"] and status["pid"] == up["pid"] and status["topics"] == up["topics"]
        # a second home pointing at the same port uses that broker instead of failing
        other = broker_up(stack_settings(tmp_path / "other", int(settings.kafka.bootstrap_servers.split(":")[1])))
        assert other["pid"] is None and other["external"] is True
        assert broker_down(stack_settings(tmp_path / "other", 1)) is False  # not its broker: left alone
    finally:
        assert broker_down(settings) is True
    assert broker_status(settings)["healthy"] is False and broker_status(settings)["pid"] is None
