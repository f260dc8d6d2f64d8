"""Assignment: deterministic across runs and processes, balanced, ramp-safe, layers exclusive/orthogonal; config validation; routing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from abtest.assignment import Assigner, bucket, buckets
from abtest.config import N_BUCKETS, ExperimentsConfig, check_ramp, load_config
from abtest.routing import DEFAULT_CONFIG, Router

UNITS = [str(i) for i in range(40_000)]


def cfg(traffic=1.0, holdout=0.0, weights=(1, 1), second_layer=True) -> ExperimentsConfig:
    layers = [
        {
            "name": "ranking",
            "salt": "rank-v1",
            "experiments": [
                {"name": "a", "salt": "a-v1", "buckets": [0, 6000], "traffic": traffic,
                 "variants": [{"name": "control", "weight": weights[0], "model": "dlf"}, {"name": "treatment", "weight": weights[1], "model": "dmoe"}]},
                {"name": "b", "salt": "b-v1", "buckets": [6000, 10000],
                 "variants": [{"name": "control", "weight": 1}, {"name": "x", "weight": 1}, {"name": "y", "weight": 2}]},
            ],
        }
    ]
    if second_layer:
        layers.append({"name": "ui", "salt": "ui-v1", "experiments": [
            {"name": "c", "variants": [{"name": "control", "weight": 1}, {"name": "badge", "weight": 1}]}]})
    return ExperimentsConfig.model_validate({"default_model": "dlf", "holdout": {"fraction": holdout, "salt": "h-v1"}, "layers": layers})


def test_bucket_is_a_fixed_function_of_unit_and_salt():
    # pinned literal values: any change of the hash would silently reshuffle every running experiment
    assert [bucket(u, "s") for u in ("1", "196", "user-42")] == [9035, 8755, 1145]
    assert bucket("196", "salt") == 8738 and bucket("0", "dlf_vs_dmoe-v1") == 7790
    import hashlib

    assert bucket("196", "salt") == int.from_bytes(hashlib.sha256(b"salt:196").digest()[:8], "big") % N_BUCKETS
    assert bucket(196, "salt") == bucket("196", "salt")
    got = buckets(UNITS[:1000], "salt")
    assert got.tolist() == [bucket(u, "salt") for u in UNITS[:1000]]
    assert got.min() >= 0 and got.max() < N_BUCKETS


def test_shipped_config_assignments_are_pinned():
    """Literal assignments of the shipped experiments file: a change here moves users between arms."""
    a = Assigner(load_config(DEFAULT_CONFIG))
    got = {u: [(x.experiment, x.variant) for x in a.assign(u)] for u in ("1", "3", "4", "5", "17")}
    assert got == {
        "1": [],
        "3": [("dlf_vs_dmoe", "treatment")],
        "4": [("dlf_vs_dmoe", "control"), ("price_badge", "badge")],
        "5": [("dlf_candidates", "control"), ("price_badge", "badge")],
        "17": [("dlf_candidates", "wide"), ("price_badge", "badge")],
    }
    assert [u for u in map(str, range(1, 240)) if a.in_holdout(u)] == ["138", "188", "223"]


def test_stable_across_processes():
    code = (
        "import sys; from abtest.assignment import Assigner; from abtest.config import ExperimentsConfig; "
        "a = Assigner(ExperimentsConfig.model_validate_json(sys.stdin.read())); "
        "print([(x.experiment, x.variant) for u in map(str, range(300)) for x in a.assign(u)])"
    )
    root = Path(__file__).resolve().parents[2]
    outs = {
        subprocess.run([sys.executable, "-c", code], input=cfg().model_dump_json(), capture_output=True, text=True, check=True,
                       cwd=root, env={"PYTHONHASHSEED": str(seed), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)}).stdout
        for seed in (0, 12345)
    }
    assert len(outs) == 1
    a = Assigner(cfg())
    assert outs.pop().strip() == str([(x.experiment, x.variant) for u in map(str, range(300)) for x in a.assign(u)])


def test_buckets_are_uniform():
    counts = np.bincount(buckets(UNITS, "uniformity") // 500, minlength=20)
    assert sps.chisquare(counts).pvalue > 0.001


def test_variants_balanced_and_weighted():
    a = Assigner(cfg())
    df = a.assign_experiment("a", UNITS)
    counts = df.group_by("variant").len().sort("variant")
    enrolled = df.filter(df["variant"].is_not_null())
    assert enrolled.height == pytest.approx(0.6 * len(UNITS), rel=0.03)
    n = dict(zip(counts["variant"].to_list(), counts["len"].to_list()))
    assert sps.chisquare([n["control"], n["treatment"]]).pvalue > 0.001
    b = a.assign_experiment("b", UNITS)
    nb = b.group_by("variant").len()
    nb = dict(zip(nb["variant"].to_list(), nb["len"].to_list()))
    obs = [nb["control"], nb["x"], nb["y"]]
    assert sps.chisquare(obs, np.array([0.25, 0.25, 0.5]) * sum(obs)).pvalue > 0.001


def test_vectorised_equals_per_unit():
    a = Assigner(cfg(traffic=0.7, holdout=0.05))
    df = a.assign_experiment("a", UNITS[:3000])
    for u, v in zip(df["unit_id"].to_list(), df["variant"].to_list()):
        got = [x.variant for x in a.assign(u) if x.experiment == "a"]
        assert got == ([v] if v is not None else [])


def test_layers_exclusive_within_and_orthogonal_across():
    a = Assigner(cfg())
    rows = a.assign_many(UNITS)
    per_unit_layer = rows.group_by("unit_id", "layer").len()
    assert per_unit_layer["len"].max() == 1  # never two experiments of one layer
    ra = a.assign_experiment("a", UNITS)["variant"].to_list()
    rc = a.assign_experiment("c", UNITS)["variant"].to_list()
    # independence of the ranking-layer and ui-layer assignments (chi-square on the contingency table)
    table = np.zeros((3, 2))
    for x, y in zip(ra, rc):
        table[{None: 0, "control": 1, "treatment": 2}[x], {"control": 0, "badge": 1}[y]] += 1
    assert sps.chi2_contingency(table).pvalue > 0.001


def test_ramp_up_keeps_earlier_assignments():
    before = Assigner(cfg(traffic=0.1)).assign_experiment("a", UNITS)
    after = Assigner(cfg(traffic=0.5)).assign_experiment("a", UNITS)
    b, c = before["variant"].to_list(), after["variant"].to_list()
    kept = [(x, y) for x, y in zip(b, c) if x is not None]
    assert kept and all(x == y for x, y in kept)
    assert sum(y is not None for y in c) == pytest.approx(5 * sum(x is not None for x in b), rel=0.1)
    assert check_ramp(cfg(traffic=0.1), cfg(traffic=0.5)) == []
    assert any("traffic lowered" in p for p in check_ramp(cfg(traffic=0.5), cfg(traffic=0.1)))
    assert any("weights" in p for p in check_ramp(cfg(), cfg(weights=(1, 3))))
    assert any("holdout" in p for p in check_ramp(cfg(), cfg(holdout=0.1)))


def test_holdout_excluded_from_every_experiment():
    a = Assigner(cfg(holdout=0.1))
    held = [u for u in UNITS[:5000] if a.in_holdout(u)]
    assert len(held) == pytest.approx(500, rel=0.2)
    assert all(a.assign(u) == [] for u in held)
    router = Router(cfg(holdout=0.1))
    d = router.route(held[0])
    assert d.holdout and d.model == "dlf" and d.assignments == [] and d.tags() == {"holdout": "1"}


def test_router_picks_variant_model_and_logs_exposures():
    from datetime import datetime, timezone

    router = Router(cfg())
    models = {}
    for u in UNITS[:2000]:
        d = router.route(u)
        v = next((x.variant for x in d.assignments if x.experiment == "a"), None)
        models.setdefault(v, set()).add(d.model)
    assert models["control"] == {"dlf"} and models["treatment"] == {"dmoe"} and models[None] == {"dlf"}
    u = next(u for u in UNITS if len(router.route(u).assignments) == 2)
    d = router.route(u)
    rows = d.exposure_rows("req-1", datetime(2026, 1, 5, 12, tzinfo=timezone.utc), n_items=10, model="dmoe")
    assert len(rows) == 2 and {r["experiment"] for r in rows} == {x.experiment for x in d.assignments}
    assert rows[0]["ts"] == datetime(2026, 1, 5, 12) and rows[0]["n_items"] == 10
    forced = router.route(u, requested_model="lr")
    assert forced.forced and forced.model == "lr" and forced.assignments == []
    partial = Router(cfg(traffic=0.5, second_layer=False))
    none = partial.route(next(x for x in UNITS if not partial.route(x).assignments))
    assert none.exposure_rows("r", datetime(2026, 1, 5), 5)[0]["experiment"] is None


def test_experiment_time_window():
    from datetime import datetime

    c = cfg()
    c.layers[0].experiments[0].start = datetime(2026, 2, 1)
    a = Assigner(c)
    u = next(u for u in UNITS if any(x.experiment == "a" for x in a.assign(u)))
    assert not any(x.experiment == "a" for x in a.assign(u, now=datetime(2026, 1, 1)))
    assert any(x.experiment == "a" for x in a.assign(u, now=datetime(2026, 3, 1)))


@pytest.mark.parametrize(
    "patch,message",
    [
        (lambda d: d["layers"][0]["experiments"][1].update(buckets=[5000, 10000]), "overlap"),
        (lambda d: d["layers"][0]["experiments"][0]["variants"][1].update(name="control"), "duplicate variant"),
        (lambda d: d["layers"][0]["experiments"][0]["variants"][0].update(weight=0), "greater than 0"),
        (lambda d: d["layers"][0]["experiments"][0].update(buckets=[0, 12000]), "buckets"),
        (lambda d: d["layers"][0]["experiments"][0].update(metrics=["nope"], primary_metric="nope"), "unknown metrics"),
        (lambda d: d["layers"][1]["experiments"][0]["variants"][0].update(model="lr"), "only one layer may route"),
        (lambda d: d["layers"][1].update(salt="rank-v1"), "distinct salts"),
        (lambda d: d["layers"][0]["experiments"][0].update(control="nobody"), "control"),
        (lambda d: d["layers"][0]["experiments"][0].update(traffic=1.5), "less than or equal"),
        (lambda d: d["layers"][0]["experiments"][0].update(extra_field=1), "Extra inputs"),
    ],
)
def test_config_validation_rejects(patch, message):
    d = cfg().model_dump(mode="json")
    patch(d)
    with pytest.raises(Exception, match=message):
        ExperimentsConfig.model_validate(d)


def test_shipped_config_is_valid(tmp_path):
    c = load_config(DEFAULT_CONFIG)
    assert c.find("dlf_vs_dmoe")[1].control == "control"
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just a list\n")
    with pytest.raises(ValueError):
        load_config(bad)
