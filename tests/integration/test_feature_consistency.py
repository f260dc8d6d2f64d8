"""Training-serving consistency on real parts: Tansu broker, stream processor, Feast, the gateway app.

The gateway logs the feature ids of every request (sample rate 1) with its
exposure; the check rebuilds them with the training-set builder from the
processor's offline parts and the offline store. Served as trained: 0
mismatches, also after later clicks (the builder never looks past the request
time). Clicks that happened before a request but that the processor had not yet
applied when it was served: the check reports them as mismatches.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from features.online import OnlineFeatureReader
from features.spec import FeatureSpec
from recast.consistency import MISMATCH_METRIC, run_check
from serving.exposures import ExposurePublisher
from serving.gateway import create_app
from serving.scoring import Scorer
from streaming.events import InteractionV1
from streaming.features import stream_sparse_features
from streaming.harness import StreamStack
from streaming.processor import StreamProcessor

pytestmark = pytest.mark.integration


class Flat:
    async def infer(self, model, inputs):
        return np.linspace(0.9, 0.1, len(inputs["sparse_ids"])).astype(np.float32), "1"

    async def ready(self, model):
        return True


def _process(settings) -> None:
    proc = StreamProcessor(settings, registry=CollectorRegistry(), batch_max_events=100, batch_max_wait_ms=20).start()
    try:
        proc.run(until_caught_up=True)
    finally:
        proc.close()


def _clicks(stack: StreamStack, prefix: str, users: list[str], ts_ms: int) -> None:
    stack.send([InteractionV1(event_id=f"{prefix}{k}", ts_ms=ts_ms + k, type="click", user=u, item=str(1 + k % 3))
                for k, u in enumerate(users)])


def _serve(stack: StreamStack, requests: list[tuple[str, list[str]]]) -> None:
    settings = stack.settings.model_copy(deep=True)
    settings.abtest.route_requests = False
    settings.loop.consistency_sample = 1.0
    static = FeatureSpec.load(settings.path(settings.data.features_dir) / "spec.json")
    spec = FeatureSpec(sparse=(*static.sparse, *stream_sparse_features(len(stack.item_vocab()) + 1)))
    registry = CollectorRegistry()
    publisher = ExposurePublisher(settings.kafka.bootstrap_servers, settings.kafka.exposures_topic,
                                  registry=registry).start()
    scorer = Scorer(OnlineFeatureReader(settings, stream=True), Flat(), {"dlf": spec}, "dlf", 50)
    published = registry.get_sample_value("recast_gateway_exposures_published_total")
    with TestClient(create_app(settings, scorer=scorer, exposures=publisher)) as client:
        for user, items in requests:
            assert client.post("/v1/score", json={"user_id": user, "item_ids": items}).status_code == 200
        deadline = time.monotonic() + 30
        while registry.get_sample_value("recast_gateway_exposures_published_total") < published + len(requests):
            assert time.monotonic() < deadline, "exposures were not delivered"
            time.sleep(0.05)


def test_served_features_equal_the_training_builder_and_lag_is_caught(tmp_path_factory):
    with StreamStack(tmp_path_factory.mktemp("consistency")) as stack:
        s = stack.settings
        now = int(time.time() * 1000)
        _clicks(stack, "a", ["3", "3", "5", "7"], now - 120_000)
        _process(s)
        _serve(stack, [("3", ["1", "2", "3"]), ("5", ["2", "4"]), ("stranger", ["1"])])
        # clicks after the requests: the builder must not use them for the earlier requests
        _clicks(stack, "b", ["3", "5", "5"], int(time.time() * 1000) + 1000)
        _process(s)
        report = run_check(s)
        assert report["checked_rows"] == 6 and report["requests"] == 3
        assert "clicks_1h_bucket" in report["features"] and "item_clicks_total_bucket" in report["features"]
        assert "user_id" in report["features"] and "genres" in report["features"]
        assert report["max_rate"] == 0, report["features"]
        prom = (s.path(s.loop.dir) / "consistency.prom").read_text()
        assert f'{MISMATCH_METRIC}{{feature="clicks_1h_bucket"}} 0.0' in prom

        # lag: user 7 clicks before the next request, but the processor applies it only afterwards
        _clicks(stack, "c", ["7", "7", "7", "7"], int(time.time() * 1000) - 5000)
        _serve(stack, [("7", ["1", "2"])])
        _process(s)
        lagged = run_check(s)
        assert lagged["checked_rows"] == 8
        assert lagged["features"]["clicks_1h_bucket"]["mismatches"] == 2  # both shown items of that request
        assert lagged["features"]["user_id"]["mismatches"] == 0
        example = lagged["features"]["clicks_1h_bucket"]["examples"][0]
        assert example["user"] == "7" and example["served"] < example["training"]
