"""`recast jobs run cogmath --preset tiny` on the real local model (as CI runs it), and the
bookkeeping of mastery with a deterministic fake model that knows every answer but one kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import jobs.backends.text as text
from jobs.cogmath.problems import load_problems
from recast.cli import main
from recast.settings import get_settings


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *extra: str) -> dict:
    monkeypatch.setenv("RECAST_JOBS__RUN_ROOT", str(tmp_path))
    get_settings.cache_clear()
    try:
        main(["jobs", "run", "cogmath", "--preset", "tiny", "--run-id", "ci", "--quiet", *extra])
    finally:
        get_settings.cache_clear()
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "succeeded", out
    return json.loads((tmp_path / "cogmath" / "ci" / "results.json").read_text())


def test_cogmath_tiny_preset_on_the_local_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    results = _run(tmp_path, monkeypatch, capsys)
    (s,) = results["summaries"]
    assert s["model"].startswith("local:") and s["problems"] == 1
    assert set(s["dimensions"]) == {"1", "3", "9"}
    assert s["mastery"]["rate"] <= s["accuracy"]["rate"]
    records = results["evaluations"][0]["problems"][0]
    assert records["original_response"].strip()
    assert all(d["response"].strip() and d["passed"] in (True, False) for d in records["dimensions"].values())
    assert results["judge_agreement"]["rule"]["n"] >= 25
    report = (tmp_path / "cogmath" / "ci" / "report.md").read_text()
    assert "mastery" in report and "Cohen" in report


class KnowsAllButMissingConditions:
    """Answers every original and inquiry right, except that it never notices a missing condition."""

    model_id = "fake:solver"

    def __init__(self) -> None:
        self.answers: dict[str, str] = {}
        for p in load_problems("templated", 3, 0):
            self.answers[p.text] = f"The answer is {p.answer}."
            for i in p.inquiries:
                self.answers[i.text] = "It cannot be solved." if i.dimension == 2 else f"The answer is {i.reference}."
                if i.dimension == 3:
                    self.answers[i.text] = f"The answer is {p.answer}."

    def generate(self, prompts: list[str], params: object = None, system: str | None = None) -> list[list[str]]:
        return [[self.answers.get(p, "Yes")] for p in prompts]


def test_mastery_bookkeeping_with_a_fake_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    fake = KnowsAllButMissingConditions()
    monkeypatch.setattr(text, "text_backend", lambda spec=None: fake)
    results = _run(tmp_path, monkeypatch, capsys, "--set", "templated_problems=3", "--set", "dimensions=[1,2,3,4,5,6,7,8,9]")
    (s,) = results["summaries"]
    assert s["accuracy"]["rate"] == 1.0 and s["mastery"]["rate"] == 0.0 and s["overestimation"] == 1.0
    assert s["dimensions"]["3"]["rate"] == 0.0
    assert all(s["dimensions"][str(d)]["rate"] == 1.0 for d in (1, 2, 4, 5, 6, 7, 8, 9))
