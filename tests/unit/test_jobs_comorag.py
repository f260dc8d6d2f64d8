"""`recast jobs run comorag --preset tiny` on the real local models: the three memory layers are
built, naive RAG and the ComoRAG loop answer, the loop runs its probing cycle on an impasse and
gathers the gold evidence; plus the pure helpers, and the loop's bookkeeping with a scripted
model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.comorag.job import ComoRAGConfig, gold_chunks
from jobs.comorag.layers import Unit, chunk_story, data_dir, parse_triples
from jobs.comorag.loop import TriRetriever, comorag
from recast.cli import main
from recast.settings import get_settings


def test_chunks_triples_and_gold_evidence():
    chunks = chunk_story("One two. Three four five. Six. " * 20, 60)
    assert all(len(c) <= 80 for c in chunks) and " ".join(chunks).startswith("One two.")
    assert parse_triples("(Cinderella; lost; a golden slipper)\nnoise (a;b)") == ["Cinderella lost a golden slipper"]
    assert gold_chunks(["the prince found her by the golden slipper", "a bird sang"], ["Golden slipper"]) == {0}


class ScriptedModel:
    """Refuses until the prompt carries a fused cue; probes are numbered lines."""

    model_id = "scripted"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def generate(self, prompts, params=None, system=None):
        self.prompts += prompts
        out = []
        for p in prompts:
            if p.startswith("Question:") and "search queries" in p:
                out.append(["1. slipper\n2. prince search"])
            elif "What we worked out so far" in p:
                out.append(["golden slipper"])
            elif p.startswith("Evidence:") and "Answer:" in p:
                out.append(["No Answer"])
            else:
                out.append(["a note about the slipper"])
        return out

    def logprobs(self, prompts, continuations, system=None):
        return [-0.1] * len(prompts)


class WordEmbedder:
    model_id = "words"

    def encode(self, texts, batch_size=64):
        import numpy as np

        vocab = ["slipper", "prince", "ball", "bird", "grave", "question"]
        v = np.array([[t.lower().count(w) + 0.01 for w in vocab] for t in texts], dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_loop_probes_on_an_impasse_then_answers_with_the_fused_cue():
    units = [Unit("veridical", "the bird at the grave", [0]), Unit("veridical", "the prince kept the slipper", [1]),
             Unit("semantic", "a ball at the palace", [0]), Unit("episodic", "[Part 1] the prince searched", [1])]
    emb, model = WordEmbedder(), ScriptedModel()
    cfg = ComoRAGConfig(max_cycles=3, probes=2)
    retriever = TriRetriever(units, emb, {"veridical": 1, "semantic": 1, "episodic": 1})
    out = comorag(model, retriever, emb, "Which question about the ball?", cfg)
    assert out["cycles"] == 1 and out["answer"] == "golden slipper"
    assert out["probes"] == ["slipper", "prince search"] and 1 in out["sources"]


@pytest.fixture()
def tiny_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[Path, dict]:
    if not (data_dir() / "qas.jsonl").exists():
        pytest.skip(f"the Cinderella data is not beside the checkout ({data_dir()})")
    monkeypatch.setenv("RECAST_JOBS__RUN_ROOT", str(tmp_path))
    get_settings.cache_clear()
    try:
        main(["jobs", "run", "comorag", "--preset", "tiny", "--run-id", "ci", "--quiet"])
    finally:
        get_settings.cache_clear()
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "succeeded", out
    run_dir = tmp_path / "comorag" / "ci"
    return run_dir, json.loads((run_dir / "results.json").read_text())


def test_comorag_tiny_preset(tiny_run: tuple[Path, dict]) -> None:
    run_dir, results = tiny_run
    assert results["model"].startswith("local:SmolLM2") and results["questions"] == 1
    assert results["layers"]["veridical"] == 4 and results["layers"]["semantic"] >= 1 and results["layers"]["episodic"] >= 1
    row = results["rows"][0]
    assert row["gold_chunks"] and isinstance(row["naive"]["answer"], str)
    # the tiny preset's confidence floor makes every answer an impasse: the loop must probe once
    assert row["comorag"]["cycles"] == 1 and row["comorag"]["probes"]
    s = results["summary"]
    assert s["comorag"]["evidence_recall"] >= s["naive"]["evidence_recall"]
    assert "| comorag |" in (run_dir / "report.md").read_text()


def test_the_job_runs_unchanged_against_an_openai_compatible_server(tmp_path, monkeypatch, capsys):
    """One setting points the job at a model server (here a local one speaking the protocol)."""
    from jobs.backends.fake_openai import FakeOpenAIServer

    if not (data_dir() / "qas.jsonl").exists():
        pytest.skip(f"the Cinderella data is not beside the checkout ({data_dir()})")
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("RECAST_JOBS__RUN_ROOT", str(tmp_path / "runs"))
        monkeypatch.setenv("RECAST_JOBS__CACHE_DIR", str(tmp_path / "cache"))
        monkeypatch.setenv("RECAST_JOBS__LLM", server.spec("served-model"))
        monkeypatch.setenv("RECAST_JOBS__EMBEDDER", server.spec("served-embedder"))
        get_settings.cache_clear()
        try:
            main(["jobs", "run", "comorag", "--preset", "tiny", "--run-id", "served", "--quiet"])
        finally:
            get_settings.cache_clear()
        paths = {path for path, _ in server.requests}
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "succeeded", out
    results = json.loads((tmp_path / "runs" / "comorag" / "served" / "results.json").read_text())
    assert results["model"].startswith("openai:served-model@") and results["embedder"].startswith("openai:served-embedder@")
    assert paths == {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}
    assert results["rows"][0]["comorag"]["cycles"] == 1
