"""A dataset described only by YAML, served end to end on real parts:
generated CSV files + description -> `recast features build --dataset FILE` ->
TorchRec training -> ONNX export -> real tritonserver -> gateway over HTTP.

The gateway's scores must equal the PyTorch model's on the same features, and
bad inputs to the CLI must fail with a clear message and nothing written.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import polars as pl
import pytest
import torch

from features.encoding import encode_padded
from features.samples import generate_ratings_csv
from features.spec import FeatureSpec
from recast import stack, workflow
from recast.settings import DataSettings, GatewaySettings, KafkaSettings, Settings, TritonSettings, TrainSettings
from training.export import inference_model_from_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECAST_")}  # home's defaults only
    env.update(RECAST_HOME=str(home), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "recast.cli", *args], capture_output=True, text=True, env=env,
                          cwd=str(home), timeout=300)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("shop")
    description = generate_ratings_csv(home / "mydata", n_users=80, n_items=50, n_ratings=4000)
    built = _cli(home, "features", "build", "--dataset", str(description))
    assert built.returncode == 0, built.stderr
    settings = Settings(
        home=home,
        data=DataSettings(dataset=str(description)),
        train=TrainSettings(epochs=2, batch_size=256),
        triton=TritonSettings(http_port=_free_port(), grpc_port=_free_port(), metrics_port=_free_port(),
                              venv=REPO / ".venv-triton", startup_timeout_s=120),
        gateway=GatewaySettings(port=_free_port(), max_candidates=50, model_name="dlf"),
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{_free_port()}"),
    )
    trained = workflow.train_model(settings, "dlf", {"progress": False})
    exported = workflow.export_model(settings, "dlf")
    status = stack.stack_up(settings, ["dlf"])
    client = httpx.Client(base_url=status["gateway"]["url"], timeout=30)
    yield settings, client, trained, exported
    client.close()
    stack.stack_down(settings)


def _torch_scores(settings: Settings, user: str, items: list[str]) -> list[float]:
    """The request scored by the PyTorch model from the offline store (context features unknown, as served)."""
    features = settings.path(settings.data.features_dir)
    spec = FeatureSpec.load(features / "spec.json")
    user_row = pl.read_parquet(features / "users.parquet").filter(pl.col("user") == user).row(0, named=True)
    item_rows = {r["item"]: r for r in pl.read_parquet(features / "items.parquet").iter_rows(named=True)}
    columns = {}
    for f in spec.sparse:
        if f.entity == "user":
            columns[f.name] = [user_row[f.name]] * len(items)
        elif f.entity == "item":
            columns[f.name] = [item_rows[i][f.name] for i in items]
        else:
            columns[f.name] = [0] * len(items)
    ids, mask = encode_padded(spec, columns)
    best = torch.load(workflow.run_dir(settings, "dlf") / "best.pt", weights_only=False)
    with torch.no_grad():
        return inference_model_from_checkpoint(best)(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()[:, 0].tolist()


def test_yaml_dataset_is_trained_exported_and_served(served) -> None:
    settings, client, trained, exported = served
    spec = FeatureSpec.load(settings.path(settings.data.features_dir) / "spec.json")
    assert spec.meta["dataset"] == "shop" and "age" in spec.names and "genres" in spec.names
    assert trained["test_auc"] > 0.6, trained
    assert exported["parity_max_abs_diff"] <= 1e-5
    items = ["i1", "i2", "i3", "i5", "i8", "i13"]
    r = client.post("/v1/score", json={"user_id": "u3", "item_ids": items, "model": "dlf"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "dlf" and body["cold_start"] is False
    got = {i["item_id"]: i["score"] for i in body["items"]}
    expected = _torch_scores(settings, "u3", items)
    assert max(abs(got[i] - e) for i, e in zip(items, expected)) <= 1e-5
    unknown = client.post("/v1/score", json={"user_id": "u3", "item_ids": ["i1", "nope"], "model": "dlf"})
    assert unknown.status_code == 422 and unknown.json()["unknown_items"] == ["nope"]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.replace("stars", "score"), "no column"),
    (lambda d: d.replace("path: ratings.csv,", "path: ratings.csv, separator: \"\\t\","), "single column"),
    (lambda d: d.replace("[0.8, 0.1, 0.1]", "[1.0, 0.0, 0.0]"), "would be empty"),
    (lambda d: d.replace('">= 4"', '">= 0"'), "same label"),
])
def test_bad_inputs_fail_clearly_and_write_nothing(tmp_path: Path, edit, message) -> None:
    description = generate_ratings_csv(tmp_path / "mydata", n_ratings=300)
    description.write_text(edit(description.read_text()))
    result = _cli(tmp_path, "features", "build", "--dataset", str(description))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "features" / "spec.json").exists()
