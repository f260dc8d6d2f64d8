"""`recast jobs run mellm --preset tiny`, as CI runs it, plus the mechanism: Farneback flow of a
subtle lip-corner movement lands on the mouth, the fused map is the onset frame blended with the
flow colours, descriptions name the action units they were written from, and a real data
directory with the wrong layout fails with the expected layout in the error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jobs.faces import datasets as ds
from jobs.faces.render import AUS, au_vector, render, sample_identity, sample_lighting, sample_pose
from jobs.mellm.describe import describe, instruction_pairs, parse_action_units
from jobs.mellm.motion import FlowParams, flow_colour_map, model_inputs, motion_enhanced_map, optical_flow
from recast.cli import main
from recast.settings import get_settings


def test_flow_of_a_subtle_smile_lands_on_the_mouth_and_the_map_fuses_it() -> None:
    rng = np.random.default_rng(1)
    parts = [{k: np.repeat(v, 2) for k, v in d.items()}
             for d in (sample_identity(rng, 1), sample_pose(rng, 1, 0.0), sample_lighting(rng, 1, 0.0))]
    onset, apex = render(np.stack([au_vector({}), au_vector({"AU12": 0.3})]), *parts, size=64, noise=0.0)
    mag = np.linalg.norm(optical_flow(onset, apex), axis=-1)
    assert mag[40:56].max() > 0.3 and mag[40:56].mean() > 4 * mag[8:28].mean()  # mouth moves, brows do not
    p = FlowParams(fusion_alpha=0.25)
    fused = motion_enhanced_map(onset, apex, p)
    colours = flow_colour_map(optical_flow(onset, apex, p))
    assert np.allclose(fused, 0.75 * onset[..., None] + 0.25 * colours, atol=1e-5)
    x = model_inputs(onset[None], apex[None], "apex")
    assert x.shape == (1, 3, 64, 64) and np.allclose(x[0, 0], apex)
    with pytest.raises(ValueError, match="unknown input"):
        model_inputs(onset[None], apex[None], "depth")
    from jobs.mellm.llm_describer import motion_cues

    cues = motion_cues(optical_flow(onset, apex))
    assert "mouth corner: up" in cues and "brow" not in cues  # what the language model is told


def test_emotion_is_read_after_the_word_emotion() -> None:
    from jobs.mellm.llm_describer import parse_emotion

    classes = list(ds.MICRO_EMOTIONS)
    assert parse_emotion("AU12, a positive smile. Emotion: surprise.", classes) == 2
    assert parse_emotion("The emotion is negative", classes) == 0
    assert parse_emotion("no idea", classes) is None


def test_descriptions_name_their_action_units() -> None:
    text = describe(["AU4", "AU7"], "negative")
    assert "AU4 (brow lowerer)" in text and "negative" in text
    assert parse_action_units(text).tolist() == [1.0 if au in ("AU4", "AU7") else 0.0 for au in AUS]
    assert parse_action_units(describe([])).sum() == 0
    pairs = instruction_pairs(np.array([[0.2 if au == "AU12" else 0 for au in AUS]]), ["positive"])
    assert "AU12 (lip corner puller)" in pairs[0]["description"] and "FACS" in pairs[0]["instruction"]


def test_real_micro_directory_with_the_wrong_layout_says_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="samples.csv"):
        ds.load_micro_dir(tmp_path, 32)
    (tmp_path / "samples.csv").write_text("subject,onset,apex,emotion,aus\ns1,a.png,b.png,happy,12\n")
    with pytest.raises(ValueError, match="not one of"):
        ds.load_micro_dir(tmp_path, 32)
    from PIL import Image

    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((40, 40), 90, np.uint8)).save(tmp_path / name)
    (tmp_path / "samples.csv").write_text("subject,onset,apex,emotion,aus\ns1,a.png,b.png,positive,AU6+12\n")
    onset, apex, labelled = ds.load_micro_dir(tmp_path, 32)
    assert onset.shape == (1, 32, 32) and labelled.y.tolist() == [1] and not labelled.generated
    assert labelled.aus[0, AUS.index("AU6")] == 1 and labelled.aus[0, AUS.index("AU12")] == 1


def test_micro_expressions_are_subtle_brief_and_deterministic() -> None:
    a, apex_at = ds.generate_micro(8, seed=2, subjects=3, frames=9, size=48)
    b, _ = ds.generate_micro(8, seed=2, subjects=3, frames=9, size=48)
    assert np.array_equal(a.x, b.x) and (apex_at > 0).all()
    assert a.aus.max() <= 0.3 and (a.aus.max(1) > 0).all()  # every sample moves, subtly
    assert set(a.groups.tolist()) <= {0, 1, 2}


def test_mellm_tiny_preset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("RECAST_JOBS__RUN_ROOT", str(tmp_path))
    get_settings.cache_clear()
    try:
        main(["jobs", "run", "mellm", "--preset", "tiny", "--run-id", "ci", "--parallelism", "2", "--quiet"])
    finally:
        get_settings.cache_clear()
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "succeeded", out
    run_dir = tmp_path / "mellm" / "ci"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["generated"] is True and set(results["scores"]) == {"apex", "flow", "fused"}
    for seeds in results["scores"].values():
        s = seeds[0]
        assert s["n"] == 48 and 0 <= s["uf1"] <= 1 and 0 <= s["uar"] <= 1  # every sample tested once
        assert all(0 <= v <= 1 for v in s["au_f1"].values()) and s["example_descriptions"]
    report = (run_dir / "report.md").read_text()
    assert "generated micro-expressions" in report and "UF1" in report
    llm = results["llm"]  # the real local language model described two test samples
    assert llm["model"].startswith("local:") and len(llm["texts"]) == 2 and llm["n"] == 2
    assert all(isinstance(t, str) for t in llm["texts"]) and 0 <= llm["uf1"] <= 1
    assert (run_dir / "mellm_inputs.png").stat().st_size > 5000 and (run_dir / "mellm_scores.png").exists()
