"""Gateway HTTP behaviour with in-memory fakes of the feature store and Triton
(the real ones are exercised in tests/integration/test_spine.py)."""

from __future__ import annotations

import json
import logging
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from features.spec import FeatureSpec, SparseFeature
from recast.settings import ExportSettings, GatewaySettings, Settings
from serving.gateway import create_app
from serving.scoring import ModelUnavailable, Scorer, build_inputs

ERROR_KEYS = {"error", "message", "request_id"}

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


def _settings(tmp_path: Path | None = None, **gateway) -> Settings:
    export = ExportSettings(local_model_repository=(tmp_path or Path("/nonexistent")) / "repo")
    return Settings(gateway=GatewaySettings(max_candidates=3, **gateway), export=export)


def _client(settings: Settings, backend=None, features=None) -> TestClient:
    scorer = Scorer(features or FakeFeatures(), backend or FakeTriton(), {"dlf": SPEC}, "dlf", max_candidates=3)
    return TestClient(create_app(settings, scorer=scorer), raise_server_exceptions=False)


@pytest.fixture()
def app():
    backend = FakeTriton()
    with _client(_settings(), backend) as client:
        yield client, backend


def _is_error(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert ERROR_KEYS <= set(body) and body["error"] == code, body
    assert body["request_id"] == r.headers["x-request-id"]
    return body


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
    assert client.post("/v1/score", json={"user_id": "u1", "item_ids": ["i1", "i2", "i3", "x"]}).status_code == 413
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

    with _client(_settings(), features=Mismatch()) as client:
        r = client.post("/v1/score", json={"user_id": "u1", "item_ids": ["i1"]})
    body = _is_error(r, 500, "internal_error")
    assert "re-export" not in body["message"] and "99" not in body["message"]  # operator detail: log only


def test_internal_details_go_to_the_log_under_the_request_id(caplog):
    class Broken(FakeFeatures):
        def item_features(self, items):
            raise ConnectionError("redis at 10.1.2.3:6379 refused")

    class Crash(FakeTriton):
        async def infer(self, model, inputs):
            raise RuntimeError("secret internals at 10.9.9.9")

    with caplog.at_level(logging.INFO, logger="recast.gateway"), _client(_settings(), features=Broken()) as client:
        r = client.post("/v1/score", json={"user_id": "u1", "item_ids": ["i1"]}, headers={"x-request-id": "abc-123"})
        body = _is_error(r, 503, "feature_store_unavailable")
        assert body["request_id"] == "abc-123" and "10.1.2.3" not in r.text
        assert any("abc-123" in m and "10.1.2.3" in m for m in caplog.messages)
        metrics = client.get("/metrics").text
        assert 'recast_gateway_backend_errors_total{reason="feature_read_failed"} 1.0' in metrics
    with caplog.at_level(logging.INFO, logger="recast.gateway"), _client(_settings(), Crash()) as client:
        r = client.post("/v1/score", json={"user_id": "u1", "item_ids": ["i1"]})
        body = _is_error(r, 500, "internal_error")
        assert "10.9.9.9" not in r.text and any(body["request_id"] in m for m in caplog.messages)
        assert 'recast_gateway_requests_total{route="/v1/score",status="500"} 1.0' in client.get("/metrics").text


def test_candidates_are_bounded_deduplicated_and_models_named(app):
    client, backend = app
    r = client.post("/v1/score", json={"user_id": "u1", "item_ids": ["i2", "i1", "i2"]})  # limit counts the raw list
    assert r.status_code == 200, r.text
    assert sorted(i["item_id"] for i in r.json()["items"]) == ["i1", "i2"]  # each candidate once
    assert backend.last["sparse_ids"].shape[0] == 2
    body = _is_error(client.post("/v1/score", json={"user_id": "u1", "item_ids": ["i1", "i2", "i3", "i4"]}),
                     413, "too_many_candidates")
    assert body["limit"] == 3
    _is_error(client.post("/v1/score", json={"user_id": "u1", "item_ids": ["i1"], "model": ""}), 422, "invalid_request")
    body = _is_error(client.post("/v1/score", json={"user_id": "u1", "item_ids": ["i1"], "model": "x"}), 404, "unknown_model")
    assert body["available"] == ["dlf"]
    body = _is_error(client.post("/v1/score", json={"user_id": "u1", "item_ids": ["i1"], "extra": "x" * 100}),
                     422, "invalid_request")
    assert body["problems"] == [{"field": "extra", "problem": "Extra inputs are not permitted"}]


def test_body_limit_comes_before_parsing():
    with _client(_settings(max_body_bytes=1000)) as client:
        big = b'{"user_id": "u1", "item_ids": [' + b'"i1",' * 400 + b'"i1"]}'
        body = _is_error(client.post("/v1/score", content=big, headers={"content-type": "application/json"}),
                         413, "body_too_large")
        assert body["limit"] == 1000
        chunked = iter([b'{"user_id": "u1", "item_ids": [', b'"i1",' * 400, b'"i1"]}'])  # no Content-Length
        _is_error(client.post("/v1/score", content=chunked, headers={"content-type": "application/json"}),
                  413, "body_too_large")
        assert client.post("/v1/score", json={"user_id": "u1", "item_ids": ["i1"]}).status_code == 200


def test_framework_errors_use_the_same_shape(app):
    client, _ = app
    _is_error(client.get("/no/such/route"), 404, "not_found")
    r = client.delete("/v1/score")
    _is_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST"
    non_utf8 = b'{"user_id": "\xff\xfe", "item_ids": ["i1"]}'  # not UTF-8
    _is_error(client.post("/v1/score", content=non_utf8, headers={"content-type": "application/json"}),
              400, "bad_request")
    body = _is_error(client.post("/v1/score", content=b"{not json", headers={"content-type": "application/json"}),
                     422, "invalid_request")
    assert body["problems"][0]["problem"].startswith("not valid JSON")


def test_openapi_documents_every_status_with_the_real_bodies(app):
    client, _ = app
    schema = client.get("/openapi.json").json()
    responses = schema["paths"]["/v1/score"]["post"]["responses"]
    assert set(responses) == {"200", "400", "404", "413", "422", "500", "503"}
    for status in set(responses) - {"200"}:
        assert responses[status]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert set(schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    readyz = schema["paths"]["/readyz"]["get"]["responses"]
    assert readyz["503"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ReadyBody"}


def test_api_key_locks_everything_but_the_probes():
    with _client(_settings(api_key="s3cret", docs=False)) as client:
        body = {"user_id": "u1", "item_ids": ["i1"]}
        r = client.post("/v1/score", json=body)
        _is_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
        _is_error(client.post("/v1/score", json=body, headers={"authorization": "Bearer wrong"}), 401, "unauthorized")
        _is_error(client.get("/metrics"), 401, "unauthorized")
        assert client.post("/v1/score", json=body, headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert client.post("/v1/score", json=body, headers={"x-api-key": "s3cret"}).status_code == 200
        assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
        schema = client.get("/openapi.json", headers={"x-api-key": "s3cret"}).json()
        assert set(schema["components"]["securitySchemes"]) == {"bearer", "apiKey"}
        assert "security" in schema["paths"]["/v1/score"]["post"] and "security" not in schema["paths"]["/readyz"]["get"]
        assert client.get("/docs", headers={"x-api-key": "s3cret"}).status_code == 404  # docs switched off


def test_cors_and_a_separate_metrics_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = _settings(cors_origins=["https://shop.example"], metrics_port=port)
    with _client(settings) as client:
        r = client.options("/v1/score", headers={"origin": "https://shop.example", "access-control-request-method": "POST",
                                                  "access-control-request-headers": "content-type"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://shop.example"
        r = client.post("/v1/score", json={"user_id": "u1", "item_ids": ["i1"]}, headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
        _is_error(client.get("/metrics"), 404, "not_found")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as scraped:
            assert b"recast_gateway_requests_total" in scraped.read()


def test_readiness_follows_the_model_files(tmp_path: Path):
    version = tmp_path / "repo" / "dlf" / "1"
    version.mkdir(parents=True)
    (version.parent / "config.pbtxt").write_text('name: "dlf"\n')
    (version / "model.onnx").write_bytes(b"model bytes")
    from serving.model_repository import sha256_file

    (version / "metadata.json").write_text(json.dumps({"model_sha256": sha256_file(version / "model.onnx")}))
    with _client(_settings(tmp_path)) as client:
        assert client.get("/readyz").json()["ready"] is True
        (version / "model.onnx").write_bytes(b"corrupted")
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["models"] == {"dlf": False}
        assert "sha256" in r.json()["problems"]["dlf"][0]
        assert 'recast_gateway_model_healthy{model="dlf"} 0.0' in client.get("/metrics").text
        (version / "model.onnx").unlink()
        assert "missing" in client.get("/readyz").json()["problems"]["dlf"][0]
