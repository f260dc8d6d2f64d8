"""Gateway HTTP behaviour with in-memory fakes of the feature store and Triton
(the real ones are exercised in tests/integration/test_spine.py)."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from features.spec import FeatureSpec, SparseFeature
from recast.settings import Settings
from serving.gateway import create_app
from serving.scoring import ModelUnavailable, Scorer, build_inputs

SPEC = FeatureSpec(
    sparse=(
        SparseFeature("user_id", 10, "user"),
        SparseFeature("item_id", 20, "item"),
        SparseFeature("genres", 5, "item", max_len=3),
    )
)


class FakeFeatures:
    users = {"u1": {"user_id": 3}}
    items = {"i1": (4, [1, 2]), "i2": (5, []), "i3": (6, [3])}

    def user_features(self, user):
        return self.users.get(user)

    def item_features(self, items):
        unknown = [i for i in items if i not in self.items]
        rows = [self.items.get(i, (0, [])) for i in items]
        return {"item_id": [r[0] for r in rows], "genres": [r[1] for r in rows]}, unknown


class FakeTriton:
    def __init__(self):
        self.up = True
        self.last = None

    async def infer(self, model, inputs):
        if not self.up:
            raise ModelUnavailable("Triton is down", reason="triton_unreachable")
        self.last = inputs
        # a deterministic "model": score grows with the item id slot
        return (inputs["sparse_ids"][:, 1:2].astype(np.float32) / 100.0), "7"

    async def ready(self, model):
        return self.up


@pytest.fixture()
def app():
    backend = FakeTriton()
    scorer = Scorer(FakeFeatures(), backend, {"dlf": SPEC}, "dlf", max_candidates=3)
    with TestClient(create_app(Settings(), scorer=scorer)) as client:
        yield client, backend


def test_scores_sorted_with_version_and_inputs(app):
    client, backend = app
    r = client.post("/v1/score", json={"user_id": "u1", "item_ids": ["i1", "i3", "i2"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i["item_id"] for i in body["items"]] == ["i3", "i2", "i1"]
    assert body["model_version"] == "7" and body["cold_start"] is False
    ids, mask = backend.last["sparse_ids"], backend.last["sparse_mask"]
    assert ids[:, 0].tolist() == [3, 3, 3]  # user broadcast over candidates
    assert ids[0, 2:].tolist() == [1, 2, 0] and mask[0, 2:].tolist() == [1, 1, 0]
    assert mask[2, 2:].tolist() == [0, 0, 0]  # item without genres


def test_cold_start_user_gets_unknown_ids(app):
    client, backend = app
    r = client.post("/v1/score", json={"user_id": "stranger", "item_ids": ["i1"]})
    assert r.status_code == 200 and r.json()["cold_start"] is True
    assert backend.last["sparse_ids"][0, 0] == 0


def test_errors(app):
    client, backend = app
    assert client.post("/v1/score", json={"user_id": "u1", "item_ids": ["i1", "x"]}).json()["unknown_items"] == ["x"]
    assert client.post("/v1/score", json={"user_id": "u1", "item_ids": ["i1"] * 4}).status_code == 413
    assert client.post("/v1/score", json={"user_id": "u1", "item_ids": []}).status_code == 422
    assert client.post("/v1/score", json={"user_id": 1.5, "item_ids": ["i1"]}).status_code == 422
    backend.up = False
    r = client.post("/v1/score", json={"user_id": "u1", "item_ids": ["i1"]})
    assert r.status_code == 503 and r.json()["error"] == "model_unavailable"
    assert client.get("/readyz").status_code == 503
    metrics = client.get("/metrics").text
    assert 'recast_gateway_backend_errors_total{reason="triton_unreachable"} 1.0' in metrics
    assert 'recast_gateway_requests_total{route="/v1/score",status="503"} 1.0' in metrics
    backend.up = True
    assert client.post("/v1/score", json={"user_id": "u1", "item_ids": ["i1"]}).status_code == 200


def test_build_inputs_rejects_spec_the_store_cannot_fill():
    with pytest.raises(Exception, match="no item feature"):
        build_inputs(SPEC, None, {"item_id": [1]}, 1)


def test_features_that_do_not_fit_the_model_are_a_json_500():
    class Mismatch(FakeFeatures):
        def item_features(self, items):
            return {"item_id": [99 for _ in items], "genres": [[] for _ in items]}, []  # 99 >= vocab 20

    scorer = Scorer(Mismatch(), FakeTriton(), {"dlf": SPEC}, "dlf", max_candidates=3)
    with TestClient(create_app(Settings(), scorer=scorer), raise_server_exceptions=False) as client:
        r = client.post("/v1/score", json={"user_id": "u1", "item_ids": ["i1"]})
    assert r.status_code == 500
    assert r.json()["error"] == "internal_error" and "re-export the model" in r.json()["message"]
