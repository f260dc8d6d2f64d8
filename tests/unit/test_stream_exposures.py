"""Exposure publishing never blocks scoring; with Kafka unreachable, exposures are buffered up to
the bound and the rest are dropped and counted (policy in serving/exposures.py)."""

from __future__ import annotations

import socket
import threading

import numpy as np
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from features.spec import FeatureSpec, SparseFeature
from recast.settings import Settings
from serving.exposures import ExposurePublisher
from serving.gateway import create_app
from serving.scoring import Scorer

SPEC = FeatureSpec(sparse=(SparseFeature("user_id", 10, "user"), SparseFeature("item_id", 20, "item")))


class Features:
    def user_features(self, user):
        return {"user_id": 3}

    def item_features(self, items):
        return {"item_id": [int(i) for i in items]}, []


class Backend:
    async def infer(self, model, inputs):
        return inputs["sparse_ids"][:, 1:2].astype(np.float32) / 100.0, "1"

    async def ready(self, model):
        return True


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def metric(registry: CollectorRegistry, name: str, labels: dict | None = None) -> float:
    value = registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def test_scoring_continues_and_drops_are_counted_when_kafka_is_down() -> None:
    registry = CollectorRegistry()
    publisher = ExposurePublisher(f"127.0.0.1:{closed_port()}", "recast.exposures", max_queue=50,
                                  registry=registry).start()
    scorer = Scorer(Features(), Backend(), {"dlf": SPEC}, "dlf", max_candidates=10)
    settings = Settings()
    settings.abtest.route_requests = False  # one exposure per request: no experiment fan-out
    with TestClient(create_app(settings, scorer=scorer, exposures=publisher)) as client:
        for k in range(80):
            r = client.post("/v1/score", json={"user_id": f"u{k}", "item_ids": ["1", "2", "3"]})
            assert r.status_code == 200, r.text
        assert publisher.pending == 50
        assert metric(registry, "recast_gateway_exposures_dropped_total", {"reason": "queue_full"}) == 30
        assert metric(registry, "recast_gateway_exposure_queue") == 50
        assert metric(registry, "recast_gateway_exposure_broker_up") == 0
        assert metric(registry, "recast_gateway_exposures_published_total") == 0
    # the app's shutdown closed the publisher: what was still buffered is counted, nothing raised
    assert metric(registry, "recast_gateway_exposures_dropped_total", {"reason": "shutdown"}) == 50


def test_publish_never_waits_for_the_sender() -> None:
    """The sender thread is stuck inside its connection attempt (a broker that never answers):
    publishing still returns at once, up to the bound, then drops and counts."""
    registry = CollectorRegistry()
    publisher = ExposurePublisher(f"127.0.0.1:{closed_port()}", "t", max_queue=2000, registry=registry)
    stuck, entered = threading.Event(), threading.Event()

    def connect() -> bool:
        entered.set()
        stuck.wait()
        return False

    publisher._connect = connect  # type: ignore[method-assign]
    publisher.start()
    results: list[bool] = []
    try:
        assert entered.wait(10), "the sender thread did not start"
        worker = threading.Thread(target=lambda: results.extend(
            publisher.publish_scored(f"r{k}", "u", "dlf", "1", [("a", 0.5)]) for k in range(2500)))
        worker.start()
        worker.join(timeout=30)  # a publish that waited on the stuck sender would never finish
        assert not worker.is_alive(), "publish_scored waited for the sender thread"
        assert results == [True] * 2000 + [False] * 500
        assert metric(registry, "recast_gateway_exposures_dropped_total", {"reason": "queue_full"}) == 500
    finally:
        stuck.set()
        publisher.close(timeout=0.2)
    assert metric(registry, "recast_gateway_exposures_dropped_total", {"reason": "shutdown"}) == 2000


def test_injected_scorer_publishes_nothing_by_default() -> None:
    scorer = Scorer(Features(), Backend(), {"dlf": SPEC}, "dlf", max_candidates=10)
    with TestClient(create_app(Settings(), scorer=scorer)) as client:
        assert client.post("/v1/score", json={"user_id": "u", "item_ids": ["1"]}).status_code == 200
        assert "recast_gateway_exposures_dropped_total" not in client.get("/metrics").text
