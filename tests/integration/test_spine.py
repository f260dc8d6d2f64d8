"""The spine end to end on real parts: real MovieLens-100K -> features + Feast ->
TorchRec training -> ONNX export -> real tritonserver -> gateway over HTTP.

Checks that the gateway's scores equal the PyTorch model's for the same
inputs, that bad input gets clear 4xx answers, and that a Triton outage is
a 503 the gateway recovers from.
"""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest
import torch

from features.encoding import encode_padded
from features.spec import FeatureSpec
from recast import stack, workflow
from recast.settings import GatewaySettings, KafkaSettings, Settings, TritonSettings, TrainSettings
from training.export import inference_model_from_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def spine(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("spine")
    repo_root = Path(__file__).resolve().parents[2]
    settings = Settings(
        home=home,
        train=TrainSettings(epochs=1, batch_size=2048),
        triton=TritonSettings(http_port=_free_port(), grpc_port=_free_port(), metrics_port=_free_port(),
                              venv=repo_root / ".venv-triton", startup_timeout_s=120),
        gateway=GatewaySettings(port=_free_port(), max_candidates=200),
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{_free_port()}"),
    )
    workflow.build_features(settings)
    trained = workflow.train_model(settings, "dlf", {"progress": False})
    exported = workflow.export_model(settings, "dlf")
    workflow.train_model(settings, "dmoe", {"progress": False})
    workflow.export_model(settings, "dmoe")
    status = stack.stack_up(settings, ["dlf", "dmoe"])
    client = httpx.Client(base_url=status["gateway"]["url"], timeout=30)
    yield settings, client, trained, exported
    client.close()
    stack.stack_down(settings)


def _torch_scores(settings: Settings, user: str, items: list[str], model_name: str = "dlf") -> np.ndarray:
    """The same request scored by the PyTorch model from the parquet offline store."""
    features = settings.path(settings.data.features_dir)
    spec = FeatureSpec.load(features / "spec.json")
    users = pl.read_parquet(features / "users.parquet").filter(pl.col("user") == user)
    item_rows = {r["item"]: r for r in pl.read_parquet(features / "items.parquet").iter_rows(named=True)}
    columns = {}
    for f in spec.sparse:
        if f.entity == "user":
            columns[f.name] = [users.get_column(f.name)[0]] * len(items)
        else:
            columns[f.name] = [item_rows[i][f.name] for i in items]
    ids, mask = encode_padded(spec, columns)
    best = torch.load(workflow.run_dir(settings, model_name) / "best.pt", weights_only=False)
    model = inference_model_from_checkpoint(best)
    with torch.no_grad():
        return model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()[:, 0]


def test_training_and_export_quality(spine):
    _, _, trained, exported = spine
    assert trained["test_auc"] > 0.70, trained
    assert exported["parity_max_abs_diff"] <= 1e-5
    assert exported["parity_rows"] >= 1000


def test_gateway_scores_equal_pytorch(spine):
    settings, client, _, _ = spine
    items = ["242", "302", "377", "51", "346", "474", "265", "465", "451", "86"]
    r = client.post("/v1/score", json={"user_id": "196", "item_ids": items})
    assert r.status_code == 200, r.text
    body = r.json()
    # the A/B router picks the model (abtest/experiments.yaml: dlf_vs_dmoe)
    assert body["model"] in ("dlf", "dmoe") and body["model_version"] == "1" and body["cold_start"] is False
    got = {i["item_id"]: i["score"] for i in body["items"]}
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    expected = _torch_scores(settings, "196", items, body["model"])
    diff = max(abs(got[item] - float(e)) for item, e in zip(items, expected))
    assert diff <= 1e-5, diff
    assert set(body["timings_ms"]) >= {"features", "inference", "total"}


def test_dmoe_served_beside_dlf_by_name(spine):
    settings, client, _, _ = spine
    items = ["242", "302", "377", "51"]
    r = client.post("/v1/score", json={"user_id": "196", "item_ids": items, "model": "dmoe"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "dmoe" and body["model_version"] == "1"
    got = {i["item_id"]: i["score"] for i in body["items"]}
    expected = _torch_scores(settings, "196", items, "dmoe")
    assert max(abs(got[i] - float(e)) for i, e in zip(items, expected)) <= 1e-5
    dlf = client.post("/v1/score", json={"user_id": "196", "item_ids": items, "model": "dlf"}).json()
    assert dlf["model"] == "dlf" and {i["item_id"]: i["score"] for i in dlf["items"]} != got
    assert client.get("/readyz").json()["models"] == {"dlf": True, "dmoe": True}
    result = (workflow.run_dir(settings, "dmoe") / "result.json").read_text()
    assert "test_expert_correlation" in result


def test_experiment_routing_splits_users_between_variants(spine):
    _, client, _, _ = spine
    served, tagged = {}, 0
    for user in range(1, 61):
        body = client.post("/v1/score", json={"user_id": str(user), "item_ids": ["242", "302"]}).json()
        served[body["model"]] = served.get(body["model"], 0) + 1
        experiments = {e["experiment"]: e["variant"] for e in body["experiments"]}
        if "dlf_vs_dmoe" in experiments:
            tagged += 1
            assert body["model"] == {"control": "dlf", "treatment": "dmoe"}[experiments["dlf_vs_dmoe"]]
    assert served.get("dlf", 0) > 0 and served.get("dmoe", 0) > 0, served
    assert tagged > 10
    forced = client.post("/v1/score", json={"user_id": "1", "item_ids": ["242"], "model": "dlf"}).json()
    assert forced["model"] == "dlf"


def test_integer_ids_and_top_k(spine):
    _, client, _, _ = spine
    r = client.post("/v1/score", json={"user_id": 196, "item_ids": [242, 302, 377], "top_k": 2})
    assert r.status_code == 200, r.text
    assert len(r.json()["items"]) == 2


def test_unknown_user_is_cold_start(spine):
    _, client, _, _ = spine
    r = client.post("/v1/score", json={"user_id": "no-such-user", "item_ids": ["242", "302"]})
    assert r.status_code == 200, r.text
    assert r.json()["cold_start"] is True


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"item_ids": ["1"]}, 422, "invalid_request"),
        ({"user_id": "196"}, 422, "invalid_request"),
        ({"user_id": ["196"], "item_ids": ["1"]}, 422, "invalid_request"),
        ({"user_id": True, "item_ids": ["1"]}, 422, "invalid_request"),
        ({"user_id": "196", "item_ids": "1"}, 422, "invalid_request"),
        ({"user_id": "196", "item_ids": []}, 422, "invalid_request"),
        ({"user_id": "196", "item_ids": [{"id": 1}]}, 422, "invalid_request"),
        ({"user_id": "196", "item_ids": ["1"], "top_k": 0}, 422, "invalid_request"),
        ({"user_id": "196", "item_ids": [str(i) for i in range(1, 202)]}, 413, "too_many_candidates"),
        ({"user_id": "196", "item_ids": ["1", "nope-1", "nope-2"]}, 422, "unknown_items"),
        ({"user_id": "196", "item_ids": ["1"], "model": "no-such-model"}, 404, "unknown_model"),
    ],
)
def test_bad_input_gets_clear_4xx(spine, body, status, code):
    _, client, _, _ = spine
    r = client.post("/v1/score", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"] == code
    if code == "unknown_items":
        assert r.json()["unknown_items"] == ["nope-1", "nope-2"]


def test_malformed_json(spine):
    _, client, _, _ = spine
    r = client.post("/v1/score", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_request"


def test_health_ready_metrics_docs(spine):
    _, client, _, _ = spine
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["models"]["dlf"] is True
    metrics = client.get("/metrics").text
    for name in ("recast_gateway_requests_total", "recast_gateway_request_seconds_bucket",
                 "recast_gateway_feature_fetch_seconds_bucket", "recast_gateway_triton_seconds_bucket"):
        assert name in metrics
    assert client.get("/openapi.json").json()["paths"]["/v1/score"]


def test_triton_down_then_recovers(spine):
    """Last in the module: stops Triton, expects 503 + metric, restarts it, expects 200."""
    settings, client, _, _ = spine
    body = {"user_id": "196", "item_ids": ["242", "302"]}
    tri = stack.triton(settings)
    tri.stop()
    r = client.post("/v1/score", json=body)
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "model_unavailable"
    assert client.get("/readyz").status_code == 503
    assert 'recast_gateway_backend_errors_total{reason="triton_unreachable"}' in client.get("/metrics").text
    tri.start(wait=True)
    tri.wait_model_ready("dlf", timeout=120)
    r = client.post("/v1/score", json=body)
    assert r.status_code == 200, r.text
