"""The closed loop on real MovieLens-100K: retrain -> candidate -> guarded rollout -> promote / roll back.

Two cycles of ``recast loop``'s code path: the first trains from scratch with
the streaming features (point in time) on the replayed history plus labelled
exposures (the labels job's attribution join), the second continues the first
one's checkpoint. Each candidate is exported (real ONNX, parity-checked) and
published under the candidate model name, then the simulated marketplace
drives the rollout: a good candidate (+10% CTR, injected) must be promoted and a
bad one (-10% CTR) rolled back, with no manual step, within the policy's
bounded simulated time.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from abtest.rollout import SimulatedCandidate
from features.feast_repo import stream_offline_dirs
from features.pipeline import build_features
from recast import loop
from recast.settings import LoopSettings, Settings, TrainSettings
from serving.model_repository import list_models
from streaming.labels import LABELS_FILE, label_examples

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _labels(settings: Settings) -> int:
    """Labelled exposures as the labels job writes them (its join, on a few hand-made events)."""
    users = pl.read_parquet(settings.path(settings.data.features_dir) / "interactions_train.parquet",
                            columns=["user", "item", "timestamp"]).tail(200)
    base = dict(position=0, score=0.5, model="dlf", model_version="1", experiment=None, variant=None,
                cold_start=False)
    exposures = pl.DataFrame([{"request_id": f"r{k}", "user": u, "item": i, "exposure_ms": (t + 1) * 1000, **base}
                              for k, (u, i, t) in enumerate(users.iter_rows())])
    outcomes = pl.DataFrame([{"event_id": f"e{k}", "request_id": f"r{k}", "user": u, "item": i, "type": "click",
                              "price": None, "currency": None, "outcome_ms": (t + 2) * 1000}
                             for k, (u, i, t) in enumerate(users.iter_rows()) if k % 3 == 0],
                            schema_overrides={"price": pl.Float64, "currency": pl.String})
    labels = label_examples(exposures, outcomes, window_ms=60_000)
    out = settings.path(settings.stream.labels_dir) / LABELS_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    labels.write_parquet(out)
    return labels.height


@pytest.fixture(scope="module")
def looped(tmp_path_factory):
    home = tmp_path_factory.mktemp("loop")
    settings = Settings(home=home, train=TrainSettings(epochs=1, batch_size=2048),
                        loop=LoopSettings(history_limit=20_000, rollout="none"))
    build_features(settings)
    n_labels = _labels(settings)
    return settings, n_labels


def test_good_candidate_is_promoted_and_bad_one_rolled_back(looped):
    settings, n_labels = looped
    assert not any(stream_offline_dirs(settings)[0].glob("*.parquet"))
    first = loop.run_cycle(settings)["candidate"]
    assert first["from_scratch"] and first["examples"] == {"history": 20_000, "labelled_exposures": n_labels}
    assert first["val_auc"] > 0.6 and first["parity_max_abs_diff"] < 1e-5
    spec = json.loads((Path(first["features_dir"]) / "spec.json").read_text())
    assert "clicks_1h_bucket" in [f["name"] for f in spec["sparse"]]
    repo = settings.path(settings.export.local_model_repository)
    assert list_models(repo) == {"dlf_candidate": [1]}  # registered, and nothing routes to it: no traffic

    policy = loop.rollout_policy(settings)
    bound = len(policy.stages) * policy.max_stage_days
    good = loop.guarded_rollout(settings, SimulatedCandidate(ctr_effect=0.10), seed=1)
    assert good["status"] == "promoted" and good["decisions"][-1] == "promote"
    assert good["simulated_days"] <= bound
    assert list_models(repo) == {"dlf": [1]}  # the candidate's weights now serve as the live model's version

    second = loop.run_cycle(settings)["candidate"]  # continues the first cycle's checkpoint
    assert not second["from_scratch"] and second["base_run"] == first["run_dir"]
    assert list_models(repo) == {"dlf": [1], "dlf_candidate": [2]}
    bad = loop.guarded_rollout(settings, SimulatedCandidate(ctr_effect=-0.10), seed=2)
    assert bad["status"] == "rolled_back" and bad["decisions"][-1] == "rollback"
    assert bad["simulated_days"] <= bound
    assert list_models(repo) == {"dlf": [1]}

    # the next cycles build on the live model (cycle 1), never on the rolled-back one; an undecided
    # candidate is superseded by a newer one
    third = loop.run_cycle(settings)["candidate"]
    assert third["base_run"] == first["run_dir"]
    fourth = loop.run_cycle(settings)["candidate"]
    assert fourth["base_run"] == first["run_dir"]
    assert list_models(repo) == {"dlf": [1], "dlf_candidate": [4]}

    registry = loop.read_registry(settings)
    assert [c["status"] for c in registry["candidates"]] == ["promoted", "rolled_back", "superseded", "candidate"]
    assert registry["live"]["version"] == 1 and registry["live"]["cycle"] == 1
    events = [json.loads(line) for line in (loop.loop_dir(settings) / loop.DECISIONS).read_text().splitlines()]
    rollout = [e for e in events if e["event"] == "rollout"]
    assert all(e["evidence"]["comparisons"] and e["evidence"]["serving"] for e in rollout)
    assert [e["event"] for e in events if e["event"] != "rollout"] == \
        ["register", "promoted", "register", "rolled_back", "register", "superseded", "register"]
    report = (loop.loop_dir(settings) / loop.REPORT).read_text()
    assert report.count("PROMOTE |") == 1 and report.count("ROLLBACK |") == 1 and "SIMULATED" in report
