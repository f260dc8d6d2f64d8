"""`recast jobs run s4d --preset tiny`, as CI runs it, plus the pieces the mechanism rests on:
the renderer is deterministic per seed and its AU controls move the face, tube masking hides the
same patches in every frame, the MoAE routes tokens to several experts with a load-balancing loss,
and a real data directory with the wrong layout fails with the expected layout in the error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from jobs.faces import datasets as ds
from jobs.faces.render import AUS
from recast.cli import main
from recast.settings import get_settings


def test_generated_faces_are_deterministic_and_follow_the_action_units() -> None:
    a, b = ds.generate_static(12, seed=3, size=32), ds.generate_static(12, seed=3, size=32)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x, ds.generate_static(12, seed=4, size=32).x)
    clips = ds.generate_clips(6, seed=0, frames=6, size=32)
    assert clips.x.shape == (6, 6, 32, 32) and 0 <= clips.x.min() and clips.x.max() <= 1
    # one face, only the lip corner puller changes: the mouth region changes, the brows do not
    from jobs.faces.render import au_vector, render, sample_identity, sample_lighting, sample_pose

    rng = np.random.default_rng(0)
    ident, pose, light = (sample_identity(rng, 1), sample_pose(rng, 1, 0.0), sample_lighting(rng, 1, 0.0))
    ident, pose, light = ({k: np.repeat(v, 2) for k, v in d.items()} for d in (ident, pose, light))
    faces = render(np.stack([au_vector({}), au_vector({"AU12": 1.0})]), ident, pose, light, size=48, noise=0.0)
    diff = np.abs(faces[0] - faces[1])
    assert diff[30:44].sum() > 5 * diff[:20].sum() and diff[30:44].sum() > 1.0
    with pytest.raises(ValueError, match="unknown action unit"):
        au_vector({"AU99": 1.0})


def test_tube_masking_and_moae_routing() -> None:
    from jobs.s4d.mae import tube_mask
    from jobs.s4d.moae import MixtureOfAdapterExperts

    keep, masked = tube_mask(2, time_tokens=3, spatial=16, ratio=0.75)
    assert keep.shape == (2, 12) and masked.shape == (2, 36)
    spatial_kept = keep % 16
    assert all(torch.equal(spatial_kept[i, :4], spatial_kept[i, 4:8]) for i in range(2))  # same tubes in every row
    torch.manual_seed(0)
    moae = MixtureOfAdapterExperts(dim=16, num_experts=4, top_k=2, bottleneck=4)
    moae.train()
    out = moae(torch.randn(3, 50, 16))
    assert out.shape == (3, 50, 16) and moae.aux_loss.item() >= 0.99  # E·Σ f·P is 1 at perfect balance
    assert len(torch.unique(moae.last_choice)) > 1


def test_real_data_directory_with_the_wrong_layout_says_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="static/"):
        ds.load_expression_dir(tmp_path, "static", "train", 32)
    (tmp_path / "static" / "train" / "joy").mkdir(parents=True)
    with pytest.raises(ValueError, match="unknown emotion folder"):
        ds.load_expression_dir(tmp_path, "static", "train", 32)
    from PIL import Image

    for split in ("train", "test"):
        folder = tmp_path / "dynamic" / split / "happiness" / "clip1"
        folder.mkdir(parents=True)
        for f in range(3):
            Image.fromarray(np.full((40, 40), 60 * f, np.uint8)).save(folder / f"{f:03d}.png")
    clips = ds.load_expression_dir(tmp_path, "dynamic", "train", 32, frames=4)
    assert clips.x.shape == (1, 4, 32, 32) and clips.y.tolist() == [1] and not clips.generated


def test_s4d_tiny_preset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("RECAST_JOBS__RUN_ROOT", str(tmp_path))
    get_settings.cache_clear()
    try:
        main(["jobs", "run", "s4d", "--preset", "tiny", "--run-id", "ci", "--parallelism", "2", "--quiet"])
    finally:
        get_settings.cache_clear()
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "succeeded", out
    run_dir = tmp_path / "s4d" / "ci"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["generated"] is True
    for name in ("clips+static", "clips"):  # the MAE learned to reconstruct masked tubes
        assert results["pretrain"][name]["final_loss"] < results["pretrain"][name]["first_loss"]
    variants = {(r["pretraining"], r["variant"]) for r in results["runs"]}
    assert variants == {("clips+static", v) for v in ("single-dynamic", "single-static", "vanilla-mt", "moae-mt")} | {
        ("clips", "single-dynamic"), ("clips", "moae-mt")}
    for r in results["runs"]:
        for task in ("dynamic", "static"):
            if task in r:
                assert 0 <= r[task]["war"] <= 1 and 0 <= r[task]["uar"] <= 1
    moae = next(r for r in results["runs"] if r["variant"] == "moae-mt" and r["pretraining"] == "clips+static")
    shares = np.array(moae["dynamic"]["expert_share"])
    assert shares.shape == (1, 3) and np.allclose(shares.sum(1), 1)
    report = (run_dir / "report.md").read_text()
    assert "generated faces" in report and "dynamic UAR" in report
    assert (run_dir / "s4d_results.png").stat().st_size > 5000 and (run_dir / "s4d_experts.png").exists()
