"""The spine end to end on real parts: real MovieLens-100K -> features + Feast ->
TorchRec training -> ONNX export -> real tritonserver -> gateway over HTTP.

Checks that the gateway's scores equal the PyTorch model's for the same
inputs, that bad input gets clear 4xx answers, and that a Triton outage is
a 503 the gateway recovers from. Then the failure paths, on the same real
parts: the API fuzzed from its own OpenAPI schema (schemathesis, all checks),
the feature store unavailable, a broken new model version while the old one
serves, a corrupted model file, a broker outage, and tritonserver killed under
load with the stack's supervisor bringing it back.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import sys
import subprocess
import threading
import time
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
from recast.processes import live_group_members, pid_alive
from recast.supervisor import Supervisor
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
    status = stack.stack_up(settings, ["dlf", "dmoe"], supervise=False)  # the supervisor starts in its own test
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


# -- failure paths (after the Triton restart above; the supervisor test comes last) ---------

DLF = {"user_id": "196", "item_ids": ["242", "302", "377"], "model": "dlf"}
SCHEMATHESIS_CONFIG = Path(__file__).with_name("schemathesis.toml")


def _wait(predicate, timeout: float, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"condition not met within {timeout:.0f}s")


def _metric(client: httpx.Client, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", client.get("/metrics").text, re.M)
    return float(found.group(1)) if found else float("nan")


def test_fuzzed_from_its_own_openapi_schema(spine, tmp_path):
    """schemathesis, every check (response schemas, status codes, content types, negative data...)."""
    _, client, _, _ = spine
    before = sum(float(v) for v in re.findall(r'^recast_gateway_requests_total\{[^}]*\} (\S+)$',
                                               client.get("/metrics").text, re.M))
    run = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(SCHEMATHESIS_CONFIG), "run",
         f"{client.base_url}/openapi.json", "--checks", "all", "--max-examples", "25", "--seed", "2019",
         "--request-timeout", "30", "--workers", "1"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    summary = run.stdout[run.stdout.rfind("SUMMARY"):] if "SUMMARY" in run.stdout else run.stdout[-4000:]
    assert run.returncode == 0, f"schemathesis found problems:\n{run.stdout[-8000:]}\n{run.stderr[-2000:]}"
    after = sum(float(v) for v in re.findall(r'^recast_gateway_requests_total\{[^}]*\} (\S+)$',
                                              client.get("/metrics").text, re.M))
    print(f"\nschemathesis: {after - before:.0f} requests\n{summary}")
    assert after - before >= 100


def test_feature_store_down_is_503_then_recovers(spine):
    """An exclusive lock on the SQLite online store: every read fails after the busy timeout."""
    settings, client, _, _ = spine
    lock = sqlite3.connect(settings.path(settings.feast.online_store_path), timeout=1)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        r = client.post("/v1/score", json={**DLF, "user_id": "186"})
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "feature_store_unavailable" and r.json()["request_id"] == r.headers["x-request-id"]
        assert "sqlite" not in r.text.lower() and "locked" not in r.text  # internals stay in the log
    finally:
        lock.rollback()
        lock.close()
    assert client.post("/v1/score", json=DLF).status_code == 200
    assert 'recast_gateway_backend_errors_total{reason="feature_read_failed"}' in client.get("/metrics").text


def _publish(settings: Settings, onnx: Path, version: int) -> None:
    from features.spec import FeatureSpec
    from serving.model_repository import default_site_packages, write_model_repository

    local = settings.path(settings.export.local_model_repository)
    write_model_repository(onnx, FeatureSpec.load(local / "dlf" / "spec.json"), "dlf", version,
                           settings.path(settings.export.model_repository), local,
                           max_batch_size=settings.export.max_batch_size, site_packages=default_site_packages(settings))


def test_broken_new_version_is_not_ready_while_the_old_one_serves(spine, tmp_path):
    from serving.model_repository import remove_version

    settings, client, _, _ = spine
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"this is not an ONNX model")
    _publish(settings, broken, 2)
    try:
        ready = _wait(lambda: (r := client.get("/readyz")).status_code == 503 and r.json(), timeout=60)
        assert ready["problems"]["dlf"] == ["version 2 failed to load (UNAVAILABLE in the model server)"]
        r = client.post("/v1/score", json=DLF)  # the previous version still answers
        assert r.status_code == 200 and r.json()["model_version"] == "1", r.text
        assert _metric(client, 'recast_gateway_model_healthy{model="dlf"}') == 0
        health = stack.stack_status(settings)["models"]["dlf"]
        assert not health["healthy"] and any(e.get("version") == "2" and e.get("reason") for e in health["triton"])
    finally:
        for repo in (settings.export.local_model_repository, settings.export.model_repository):
            remove_version(settings.path(repo), "dlf", 2)
    _wait(lambda: client.get("/readyz").status_code == 200, timeout=60)


def test_corrupted_model_file_flips_readiness_within_seconds(spine):
    settings, client, _, _ = spine
    model_file = settings.path(settings.export.local_model_repository) / "dlf" / "1" / "model.onnx"
    original = model_file.read_bytes()
    try:
        with open(model_file, "r+b") as f:  # in place, as a disk or a bad copy would
            f.seek(len(original) // 2)
            f.write(b"\0" * 64)
        corrupted = time.monotonic()
        body = _wait(lambda: (r := client.get("/readyz")).status_code == 503 and r.json(), timeout=10)
        flipped = time.monotonic() - corrupted
        assert "sha256" in body["problems"]["dlf"][0]
        status = _wait(lambda: (m := stack.stack_status(settings)["models"]["dlf"])["healthy"] is False and m, timeout=10)
        assert "sha256" in status["problems"][0]
        print(f"\n/readyz flipped {flipped:.2f}s after the model file was corrupted")
    finally:
        model_file.write_bytes(original)
    _wait(lambda: client.get("/readyz").status_code == 200, timeout=120)
    _wait(lambda: client.post("/v1/score", json=DLF).status_code == 200, timeout=120)


def test_exposure_broker_gauge_follows_an_outage(spine):
    from streaming.broker import LocalBroker, broker_up

    settings, client, _, _ = spine
    _wait(lambda: _metric(client, "recast_gateway_exposure_broker_up") == 1, timeout=30)
    LocalBroker(settings).stop()
    try:
        _wait(lambda: _metric(client, "recast_gateway_exposure_broker_up") == 0, timeout=10)
        assert client.post("/v1/score", json=DLF).status_code == 200  # scoring never waits for Kafka
    finally:
        broker_up(settings)
    _wait(lambda: _metric(client, "recast_gateway_exposure_broker_up") == 1, timeout=30)


def test_supervisor_restarts_tritonserver_killed_under_load(spine):
    """Last: kill -9 of tritonserver while requests flow; nobody runs a command, scoring recovers."""
    settings, client, _, _ = spine
    tri = stack.triton(settings)
    old_pid = tri.pid()
    assert old_pid is not None and client.post("/v1/score", json=DLF).status_code == 200
    supervisor = Supervisor(settings)
    supervisor.start()
    results: list[tuple[float, int]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=30) as own:
            while not stop.is_set():
                results.append((time.monotonic(), own.post("/v1/score", json=DLF).status_code))
                time.sleep(0.02)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        _wait(lambda: any(code == 200 for _, code in results), timeout=30)
        time.sleep(2.0)  # a few supervision rounds with everything up: nothing to restart
        assert supervisor.status()["restarts"].get("triton", 0) == 0, supervisor.log_file.read_text()
        assert tri.pid() == old_pid
        os.kill(old_pid, signal.SIGKILL)
        killed = time.monotonic()
        _wait(lambda: any(t > killed and code == 503 for t, code in results), timeout=30)
        recovered_at = _wait(lambda: next((t for t, code in results if t > killed and code == 200), None), timeout=180)
        state = _wait(lambda: (s := supervisor.status())["restarts"].get("triton", 0) >= 1 and s, timeout=10)
        assert tri.pid() not in (None, old_pid)
        assert "triton" in (supervisor.log_file.read_text())
        assert not pid_alive(old_pid)  # (reaps it: the killed server was a child of this process)
        # Its backend stubs, left in its process group, were killed too. Killed stubs are
        # reparented to PID 1, which may reap them late (or never, in a container whose init
        # does not reap): a zombie is dead, so only running members of the group count.
        assert _wait(lambda: not live_group_members(old_pid), timeout=10), live_group_members(old_pid)
        failed = sum(1 for t, code in results if killed < t < recovered_at and code != 503)
        assert failed == 0, "during the outage every failure must be a 503"
        print(f"\ntritonserver killed: scoring back after {recovered_at - killed:.1f}s, supervisor state {state}")
    finally:
        stop.set()
        worker.join(timeout=30)
    assert stack.stack_status(settings)["supervisor"]["pid"] == supervisor.pid()
