"""`recast jobs run genki --preset tiny` on the real local models: InfoNCE trains the retriever,
LoRA integration lowers the language-model loss on the knowledge-base passages, and every condition
is scored; plus the pure parts (passages and gold, the InfoNCE loss, the consistency ensemble, the
line fit)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from jobs.genki.data import data_path, gold_passage, split_passages
from jobs.genki.ensemble import clean_answer, consistency_pick, majority_share
from jobs.genki.evaluate import linear_fit
from jobs.genki.job import CONDITIONS
from recast.cli import main
from recast.settings import get_settings


def test_passages_and_gold_passage():
    passages = split_passages("Mars has two moons. Deimos is small! Phobos is near? The end.", 2)
    assert passages == ["Mars has two moons. Deimos is small!", "Phobos is near? The end."]
    assert gold_passage(passages, "Mars has two moons. Deimos is", "small") == 0
    assert gold_passage(passages, "something else entirely", "near") == 1
    assert gold_passage(passages, "x", "Europa") is None


def test_info_nce_prefers_aligned_pairs_and_masks_shared_gold():
    import torch

    from jobs.genki.retriever import info_nce

    q = torch.eye(3)
    aligned = info_nce(q, q.clone(), [0, 1, 2], 0.05)
    shuffled = info_nce(q, q[[1, 2, 0]], [0, 1, 2], 0.05)
    assert aligned < 0.01 < shuffled
    # two questions with the same gold passage are not each other's negatives
    twins = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]])
    assert info_nce(twins, twins, [0, 0, 2], 0.05) < 0.01 < info_nce(twins, twins, [0, 1, 2], 0.05)


def test_consistency_ensemble_picks_the_majority_answer():
    answer, scores = consistency_pick(["Europa", "Callisto", "the Callisto", "", "Callisto."])
    assert answer == "Callisto" and scores[3] == -1.0
    assert consistency_pick(["", ""])[0] == ""
    assert clean_answer("Callisto. It orbits Jupiter.\nmore") == "Callisto"
    assert majority_share(["a", "A", "b"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        consistency_pick([])


def test_linear_fit():
    fit = linear_fit([0, 1, 2, 3], [1, 3, 5, 7])
    assert fit["slope"] == pytest.approx(2) and fit["intercept"] == pytest.approx(1) and fit["r2"] == pytest.approx(1)
    assert math.isnan(linear_fit([1, 2], [3, 3])["r2"])


@pytest.fixture()
def tiny_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[Path, dict]:
    if not data_path("fictional_knowledge_paraphrased.json").exists():
        pytest.skip("the fictional-knowledge data is not beside the checkout")
    monkeypatch.setenv("RECAST_JOBS__RUN_ROOT", str(tmp_path))
    get_settings.cache_clear()
    try:
        main(["jobs", "run", "genki", "--preset", "tiny", "--run-id", "ci", "--quiet"])
    finally:
        get_settings.cache_clear()
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "succeeded", out
    run_dir = tmp_path / "genki" / "ci"
    return run_dir, json.loads((run_dir / "results.json").read_text())


def test_genki_tiny_preset(tiny_run: tuple[Path, dict]) -> None:
    run_dir, results = tiny_run
    assert results["model"].startswith("local:SmolLM2") and results["held_out_probes"] == 3
    # InfoNCE: the loss falls and the retriever ranks the training questions' gold passages no worse
    loss = results["infonce_loss"]
    assert loss[-1] < loss[0]
    r = results["retrieval"]
    assert r["infonce"]["train"]["recall@1"] >= r["pretrained"]["train"]["recall@1"]
    # LoRA integration: the generator's LM loss on the knowledge-base passages falls
    assert results["passage_loss"]["after"] < results["passage_loss"]["before"]
    for row in results["rows"]:
        assert set(CONDITIONS) <= set(row) and len(row["retrieved"]) == 2
        assert len(row["genki"]["candidates"]) == 4  # three templates + one sample
        assert row["genki"]["answer"] == consistency_pick(row["genki"]["candidates"])[0]
        assert all(math.isfinite(row[c]["logprob_per_token"]) for c in CONDITIONS)
    assert len(results["relation"]["x"]) == 3
    assert "| genki |" in (run_dir / "report.md").read_text() and (run_dir / "genki.png").exists()
