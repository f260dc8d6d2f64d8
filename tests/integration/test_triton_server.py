"""A real tritonserver (from the nvidia-pytriton wheel) serving the local repository.

No mocks: the test builds a tiny ONNX model with ``onnx.helper``, publishes it
with ``write_model_repository``, starts ``LocalTriton`` on free ports and talks
to it with ``tritonclient.http``. If tritonserver cannot start, the test fails
with the server log; it never skips.
"""

from __future__ import annotations

import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from features.spec import FeatureSpec, SparseFeature
from recast.settings import ExportSettings, Settings, TritonSettings
from serving.model_repository import list_models, write_model_repository
from serving.triton_launcher import LocalTriton

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SPEC = FeatureSpec(
    sparse=(
        SparseFeature("user_id", 1000, "user"),
        SparseFeature("item_id", 500, "item"),
        SparseFeature("genres", 20, "item", max_len=4),
    )
)
SCALES = {1: 0.01, 2: 0.02}


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _tiny_onnx(path: Path, scale: float) -> Path:
    """probability = sigmoid(sum(mask * float(ids), axis=1) * scale), shape [batch, 1]."""
    from onnx import TensorProto, checker, helper, save

    slots = SPEC.total_slots
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["sparse_ids"], ["ids_f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["ids_f", "sparse_mask"], ["masked"]),
            helper.make_node("ReduceSum", ["masked", "axes"], ["summed"], keepdims=1),
            helper.make_node("Mul", ["summed", "scale"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["probability"]),
        ],
        "tiny_ctr",
        [
            helper.make_tensor_value_info("sparse_ids", TensorProto.INT64, ["batch", slots]),
            helper.make_tensor_value_info("sparse_mask", TensorProto.FLOAT, ["batch", slots]),
        ],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 1])],
        initializer=[
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
            helper.make_tensor("scale", TensorProto.FLOAT, [], [scale]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))
    return path


def _expected(ids: np.ndarray, mask: np.ndarray, scale: float) -> np.ndarray:
    logit = (mask * ids.astype(np.float32)).sum(axis=1, keepdims=True, dtype=np.float32) * np.float32(scale)
    return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)


def _batch(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    ids = rng.integers(0, 400, size=(n, SPEC.total_slots), dtype=np.int64)
    mask = (rng.random((n, SPEC.total_slots)) < 0.7).astype(np.float32)
    ids[mask == 0] = 0
    return ids, mask


def _infer(client, ids: np.ndarray, mask: np.ndarray, version: int | None = None) -> np.ndarray:
    import tritonclient.http as httpclient

    inputs = [
        httpclient.InferInput("sparse_ids", list(ids.shape), "INT64"),
        httpclient.InferInput("sparse_mask", list(mask.shape), "FP32"),
    ]
    inputs[0].set_data_from_numpy(ids)
    inputs[1].set_data_from_numpy(mask)
    outputs = [httpclient.InferRequestedOutput("probability")]
    result = client.infer(
        "tiny", inputs, outputs=outputs, model_version="" if version is None else str(version)
    )
    return result.as_numpy("probability")


def _counts(client, version: int) -> tuple[int, int]:
    """(requests, model executions) served so far by one version."""
    stats = client.get_inference_statistics("tiny", str(version))["model_stats"][0]
    return int(stats["inference_stats"]["success"]["count"]), int(stats["execution_count"])


@pytest.fixture
def triton(tmp_path: Path):
    venv = ROOT / ".venv-triton"
    assert (venv / "bin" / "python").exists(), f"{venv} missing: run `make install`"
    http, grpc, metrics = _free_ports(3)
    settings = Settings(
        home=tmp_path,
        triton=TritonSettings(
            http_port=http, grpc_port=grpc, metrics_port=metrics, venv=venv, startup_timeout_s=45
        ),
        export=ExportSettings(
            model_repository=tmp_path / "repo", local_model_repository=tmp_path / "repo_local"
        ),
    )
    server = LocalTriton(settings, poll_interval_s=1)
    yield server, settings
    server.stop()


def test_serves_batches_and_versions(triton, tmp_path: Path) -> None:
    import tritonclient.http as httpclient

    server, settings = triton
    site = next((ROOT / ".venv-triton").glob("lib/python3*/site-packages"))

    def publish(version: int) -> None:
        onnx = _tiny_onnx(tmp_path / "export" / f"v{version}" / "model.onnx", SCALES[version])
        write_model_repository(
            onnx, SPEC, "tiny", version,
            settings.path(settings.export.model_repository),
            settings.path(settings.export.local_model_repository),
            max_batch_size=64, max_queue_delay_us=200, site_packages=site,
        )

    publish(1)
    pid = server.start(wait=True)  # raises with the log tail if it cannot start
    assert server.is_ready() and server.model_ready("tiny", 1)
    assert server.start(wait=True) == pid  # idempotent
    assert LocalTriton(settings).status()["running"]  # state visible to another instance

    client = httpclient.InferenceServerClient(settings.triton.url, network_timeout=10)
    rng = np.random.default_rng(7)
    for n in (1, 37):
        ids, mask = _batch(rng, n)
        got = _infer(client, ids, mask)
        assert got.shape == (n, 1) and got.dtype == np.float32
        np.testing.assert_allclose(got, _expected(ids, mask, SCALES[1]), rtol=0, atol=1e-6)

    # Concurrent requests of mixed sizes: the dynamic batcher merges them into
    # one execute() call, and model.py must split the scores back correctly.
    # (Threads, not tritonclient's async_infer: that one is serialized here.)
    before = _counts(client, 1)
    batches = [_batch(rng, 1 + i % 5) for i in range(64)]

    def send(chunk: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        own = httpclient.InferenceServerClient(settings.triton.url, network_timeout=10)
        try:
            return [_infer(own, ids, mask) for ids, mask in chunk]
        finally:
            own.close()

    with ThreadPoolExecutor(8) as pool:
        results = [r for part in pool.map(send, [batches[i::8] for i in range(8)]) for r in part]
    ordered = [b for i in range(8) for b in batches[i::8]]
    for (ids, mask), got in zip(ordered, results):
        np.testing.assert_allclose(got, _expected(ids, mask, SCALES[1]), rtol=0, atol=1e-6)
    after = _counts(client, 1)
    requests_served, executions = after[0] - before[0], after[1] - before[1]
    assert requests_served == 64
    assert executions < requests_served, "dynamic batching never merged two requests"
    print(f"\n64 concurrent requests ran in {executions} model executions")

    ids, mask = _batch(rng, 1)
    latencies = []
    for _ in range(50):
        t0 = time.perf_counter()
        _infer(client, ids, mask)
        latencies.append((time.perf_counter() - t0) * 1000)
    p50 = statistics.median(latencies)
    print(f"\nsingle-row HTTP infer latency: p50 {p50:.2f} ms, max {max(latencies):.2f} ms")

    # A new version is picked up by polling; the previous one keeps serving.
    publish(2)
    server.wait_model_ready("tiny", timeout=20, version=2)
    assert list_models(settings.path(settings.export.local_model_repository)) == {"tiny": [1, 2]}
    ids, mask = _batch(rng, 37)
    for version in (1, 2):
        assert server.model_ready("tiny", version)
        got = _infer(client, ids, mask, version=version)
        np.testing.assert_allclose(got, _expected(ids, mask, SCALES[version]), rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        _infer(client, ids, mask), _expected(ids, mask, SCALES[2]), rtol=0, atol=1e-6
    )  # no version asked: the latest answers
    client.close()

    assert LocalTriton(settings).stop() is True  # stop from another instance, as `recast stack down`
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", settings.triton.http_port)) != 0
    assert not server.status()["running"]


def test_start_failure_is_loud(tmp_path: Path) -> None:
    """A model that cannot load makes start() raise with the server's log, not hang."""
    http, grpc, metrics = _free_ports(3)
    repo = tmp_path / "repo_local"
    broken = repo / "broken" / "1"
    broken.mkdir(parents=True)
    (repo / "broken" / "config.pbtxt").write_text('name: "broken"\nbackend: "python"\n')
    (broken / "model.py").write_text("raise RuntimeError('boom from model.py')\n")
    settings = Settings(
        home=tmp_path,
        triton=TritonSettings(
            http_port=http, grpc_port=grpc, metrics_port=metrics,
            venv=ROOT / ".venv-triton", startup_timeout_s=30,
        ),
        export=ExportSettings(local_model_repository=repo),
    )
    server = LocalTriton(settings)
    try:
        with pytest.raises(Exception, match="boom from model.py"):
            server.start(wait=True)
    finally:
        server.stop()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", http)) != 0


def test_production_model_config_needs_the_onnxruntime_backend(tmp_path: Path) -> None:
    """The production repository (``backend: "onnxruntime"``) cannot be served here: the
    ``tritonserver`` bundled in the nvidia-pytriton wheel ships only the Python backend
    (``backends/`` holds ``python`` alone), so the onnxruntime backend cannot load. What
    this real server can still check is that the production ``config.pbtxt`` parses and
    fails for that reason alone, not for a configuration error; serving it is left to the
    NVIDIA container (helm chart).
    """
    http, grpc, metrics = _free_ports(3)
    settings = Settings(
        home=tmp_path,
        triton=TritonSettings(http_port=http, grpc_port=grpc, metrics_port=metrics,
                              venv=ROOT / ".venv-triton", startup_timeout_s=45),
        export=ExportSettings(model_repository=tmp_path / "repo", local_model_repository=tmp_path / "repo_local"),
    )
    onnx = _tiny_onnx(tmp_path / "export" / "model.onnx", 0.01)
    write_model_repository(onnx, SPEC, "tiny", 1, tmp_path / "repo", tmp_path / "repo_local", max_batch_size=64,
                           site_packages=next((ROOT / ".venv-triton").glob("lib/python3*/site-packages")))
    server = LocalTriton(settings, model_repository=tmp_path / "repo")
    try:
        with pytest.raises(Exception) as failed:
            server.start(wait=True)
    finally:
        server.stop()
    message = str(failed.value)
    reasons = [line for line in message.splitlines() if "failed to load 'tiny'" in line]
    assert reasons, message
    assert all("unable to find backend library for backend 'onnxruntime'" in line for line in reasons), message
