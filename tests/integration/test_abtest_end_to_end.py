"""End to end: `recast abtest simulate` -> `recast abtest report` (CLI, parquet), and the simulator
driving the real gateway app (FastAPI, in-process, fake feature store/Triton) through GatewayDriver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    h = tmp_path_factory.mktemp("abtest_home")
    feats = h / "data" / "features"
    feats.mkdir(parents=True)
    pl.DataFrame({"user": [str(i) for i in range(1, 944)]}).write_parquet(feats / "users.parquet")
    pl.DataFrame({"item": [str(i) for i in range(1, 1683)]}).write_parquet(feats / "items.parquet")
    return h


def recast(home: Path, *args: str) -> dict:
    env = {**os.environ, "RECAST_HOME": str(home), "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("RECAST_CONFIG", None)
    out = subprocess.run([sys.executable, "-m", "recast.cli", "abtest", *args], capture_output=True, text=True, env=env, cwd=home, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_cli_simulate_then_report(home):
    sim = recast(home, "simulate", "--units", "30000", "--days", "10", "--ctr-lift", "0.08", "--purchase-lift", "0.05")
    assert sim["label"].startswith("SIMULATED") and sim["requests"] > 0
    data = Path(sim["out"])
    assert data == home / "data" / "abtest" / "dlf_vs_dmoe" and (data / "simulation.json").exists()
    rep = recast(home, "report", "dlf_vs_dmoe")
    assert rep["valid"] and Path(rep["html"]).exists()
    doc = json.loads(Path(rep["json"]).read_text())
    assert doc["simulation"]["simulated"] is True
    ctr = next(c for c in doc["comparisons"] if c["metric"] == "ctr" and c["role"] == "metric")
    assert ctr["true_rel_lift"] == pytest.approx(0.08) and ctr["p_value"] < 1e-4  # +8% on ~15k users per arm: power ~1
    assert ctr["rel_ci"][0] > 0 and ctr["status"] == "ok" and ctr["mde"] > 0
    # one verdict line per primary metric, with the detectable effect beside it
    assert [v["metric"] for v in rep["verdicts"]] == ["gmv_per_user"]
    assert rep["verdicts"][0]["verdict"] in {"ship", "don't ship", "keep running"} and rep["verdicts"][0]["mde"] > 0
    assert any(c["role"] == "guardrail" for c in doc["comparisons"])
    html = Path(rep["html"]).read_text()
    assert "SIMULATED DATA" in html and "Forest plot" in html and "Lift over time" in html and "Order-value quantiles" in html
    assert "SAMPLE RATIO MISMATCH" not in html


def test_cli_power(home):
    plan = recast(home, "power", "--mean", "0.74", "--sd", "17.2", "--lift", "0.05", "--users", "70000")
    assert plan["users_per_arm"] == pytest.approx(2 * 17.2**2 * (1.959964 + 0.841621) ** 2 / (0.05 * 0.74) ** 2, rel=1e-4)
    assert 0 < plan["power_at_lift"] < 0.8 and plan["mde"] > 0.05
    logged = recast(home, "power", "--experiment", "dlf_vs_dmoe", "--lift", "0.1")
    gmv = next(m for m in logged["metrics"] if m["metric"] == "gmv_per_user")
    assert gmv["users_needed_per_arm"] > 0 and gmv["mde_now"] > 0


def test_cli_report_shows_srm_banner(home, tmp_path):
    recast(home, "simulate", "--units", "20000", "--days", "5", "--srm-drop", "0.08", "--out", str(tmp_path / "ev"))
    rep = recast(home, "report", "dlf_vs_dmoe", "--data", str(tmp_path / "ev"), "--out", str(tmp_path / "rep"), "--no-timeline")
    assert rep["valid"] is False and rep["srm_p_value"] < 0.001
    assert "SAMPLE RATIO MISMATCH" in Path(rep["html"]).read_text()
    assert all(m["decision"] == "invalid (SRM)" for m in rep["metrics"])


def test_cli_validate_and_assign(home, tmp_path):
    assert recast(home, "validate")["ok"]
    got = recast(home, "assign", "1", "196")
    assert [g["user"] for g in got] == ["1", "196"] and all("model" in g for g in got)
    cfg = (ROOT / "abtest" / "experiments.yaml").read_text()
    lowered = tmp_path / "lowered.yaml"
    lowered.write_text(cfg.replace("traffic: 0.2", "traffic: 0.1"))
    env = {**os.environ, "RECAST_HOME": str(home)}
    out = subprocess.run([sys.executable, "-m", "recast.cli", "abtest", "validate", "--config", str(lowered), "--against", str(ROOT / "abtest" / "experiments.yaml")],
                         capture_output=True, text=True, env=env, cwd=home)
    assert out.returncode != 0 and "traffic lowered" in out.stdout


class _Features:
    def user_features(self, user):
        return {"user_id": int(user.split("~")[0]) % 10} if user[0].isdigit() else None

    def item_features(self, items):
        return {"item_id": [int(i) % 20 for i in items], "genres": [[1] for _ in items]}, []


class _Triton:
    async def infer(self, model, inputs):
        ids = inputs["sparse_ids"][:, 1:2].astype(np.float32)
        score = ids / 100.0 if model == "dlf" else (20 - ids) / 100.0  # two models that rank differently
        return score, "1"

    async def ready(self, model):
        return True


def test_simulator_drives_the_gateway_app():
    from fastapi.testclient import TestClient

    from abtest.config import load_config
    from abtest.driver import GatewayDriver
    from abtest.events import MemorySink
    from abtest.analysis import analyze
    from abtest.routing import DEFAULT_CONFIG, Router
    from abtest.simulator import MarketplaceSimulator, SimulationConfig
    from features.spec import FeatureSpec, SparseFeature
    from recast.settings import Settings
    from serving.gateway import create_app
    from serving.scoring import Scorer

    spec = FeatureSpec(sparse=(SparseFeature("user_id", 10, "user"), SparseFeature("item_id", 20, "item"), SparseFeature("genres", 5, "item", max_len=3)))
    settings = Settings()
    if hasattr(settings, "stream") and hasattr(settings.stream, "publish_exposures"):
        settings.stream.publish_exposures = False  # no broker in this test
    scorer = Scorer(_Features(), _Triton(), {"dlf": spec, "dmoe": spec}, "dlf", max_candidates=500)
    cfg = load_config(DEFAULT_CONFIG)
    sim = MarketplaceSimulator(SimulationConfig(experiment="dlf_vs_dmoe", n_units=60, days=2, pre_days=1, sessions_per_day=1.0, seed=4), cfg)
    with TestClient(create_app(settings, scorer=scorer)) as client:
        driver = GatewayDriver(router=Router(cfg, "dlf"), client=client)
        sink = MemorySink()
        meta = sim.simulate_driven(driver, sink, candidates=30, max_requests=150)
    exp = sink.exposures()
    assert meta["requests"] == 150 and exp["request_id"].n_unique() == 150
    enrolled = exp.filter(pl.col("experiment") == "dlf_vs_dmoe")
    assert enrolled.height > 0
    # the gateway served the model the router chose
    for variant, model in enrolled.select("variant", "model").unique().iter_rows():
        assert model == {"control": "dlf", "treatment": "dmoe"}[variant]
    r = analyze(cfg, "dlf_vs_dmoe", exp, sink.outcomes(), timeline=False)
    assert sum(r.units.values()) == enrolled["unit_id"].n_unique()
