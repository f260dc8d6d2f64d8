"""`recast jobs run perception-r1 --preset tiny`, as CI runs it: GRPO raises each variant's own
reward over training (the curve rises, not just finishes), and the visual-perception reward
raises perception correctness on held-out figures, McNemar-significantly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.perception_r1.task import TOK, make_problems, parse, reference_response, rewards
from recast.cli import main
from recast.settings import get_settings


def test_generated_figures_carry_consistent_annotations() -> None:
    data = make_problems(50, seed=3)
    for i in range(len(data)):
        img = data.images[i]
        red = int(((img[0] == 1) & (img[1] == 0) & (img[2] == 0)).sum()) // 4
        blue = int(((img[2] == 1) & (img[0] == 0) & (img[1] == 0)).sum()) // 4
        assert (red, blue) == (int(data.red[i]), int(data.blue[i]))
    ref = reference_response(3, 1, "yes")
    assert parse(ref) == {"red": 3, "blue": 1, "answer": "yes"}
    assert rewards(ref, 3, 1, "yes") == {"accuracy": 1.0, "format": 1.0, "perception": 1.0, "perception_all": 1.0}
    # a right answer from a wrong perception: rewarded for accuracy, half for perception
    assert rewards(reference_response(2, 1, "yes"), 3, 1, "yes")["perception"] == 0.5
    assert rewards([TOK["<a>"], TOK["yes"], TOK["</a>"], TOK["<eos>"]], 3, 1, "yes")["format"] == 0.0


@pytest.fixture()
def tiny_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[Path, dict]:
    monkeypatch.setenv("RECAST_JOBS__RUN_ROOT", str(tmp_path))
    get_settings.cache_clear()
    try:
        main(["jobs", "run", "perception-r1", "--preset", "tiny", "--run-id", "ci", "--parallelism", "2", "--quiet"])
    finally:
        get_settings.cache_clear()
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "succeeded", out
    run_dir = tmp_path / "perception-r1" / "ci"
    return run_dir, json.loads((run_dir / "results.json").read_text())


def test_perception_r1_tiny_preset(tiny_run: tuple[Path, dict]) -> None:
    run_dir, results = tiny_run
    summary = results["summary"]
    assert set(summary) == {"accuracy_format", "accuracy_format_perception"}
    for s in summary.values():
        assert s["reward_last_tenth"] > s["reward_first_tenth"] + 0.15   # GRPO learns its own reward
    plain, percept = summary["accuracy_format"], summary["accuracy_format_perception"]
    assert plain["before"] == percept["before"]                          # one warm start, paired comparison
    assert percept["after"]["perception"]["rate"] > percept["before"]["perception"]["rate"] + 0.05
    assert percept["mcnemar"]["perception"]["p_value"] < 0.05
    assert percept["after"]["perception"]["rate"] > plain["after"]["perception"]["rate"]
    assert (run_dir / "reward_curves.png").stat().st_size > 5000
    assert "McNemar" in (run_dir / "report.md").read_text()
