"""`recast jobs run memgas --preset tiny`, as CI runs it, on the real local models: the memory is
built (summaries by the model), sessions are associated and ranked by every method, recall /
NDCG are computed against LoCoMo's gold evidence and the model answers; plus the mechanism's pure
functions on hand-made inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jobs.memgas import memory as m
from jobs.memgas.data import default_path
from recast.cli import main
from recast.settings import get_settings


def test_gmm_accepts_the_related_cluster_only():
    sims = np.array([0.1, 0.12, 0.08, 0.11, 0.09, 0.72, 0.75, 0.7])
    assert m.gmm_accept(sims).tolist() == [False] * 5 + [True] * 3
    assert not m.gmm_accept(np.array([0.5, 0.9])).any()  # too little history
    assert not m.gmm_accept(np.full(6, 0.4)).any()  # no spread, no related group


def test_router_prefers_the_peaked_granularity_and_ppr_follows_associations():
    peaked, flat = np.array([0.9, 0.1, 0.1, 0.1]), np.array([0.5, 0.5, 0.5, 0.5])
    for form in ("softmax", "inverse"):
        w = m.router_weights([peaked, flat], temperature=0.1, form=form)
        assert w.sum() == pytest.approx(1.0) and w[0] > w[1]
    # a chain 0-1 associated, 2 isolated: restarting at 0 puts mass on 1, none on 2
    adj = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=float)
    r = m.personalized_pagerank(adj, np.array([1.0, 0, 0]), restart=0.5)
    assert r.sum() == pytest.approx(1.0) and r[1] > 0.2 and r[2] == pytest.approx(0.0)
    graph = m.memory_graph(2, [np.array([0, 0, 1])], np.zeros((2, 2)))
    assert graph.shape == (5, 5) and graph[2, 0] == graph[4, 1] == 1.0
    assert m.session_scores_from_nodes(np.array([0.1, 0.2, 0.3, 0.3, 0.1]), 2, [np.array([0, 0, 1])]).tolist() == \
        pytest.approx([0.7, 0.3])


@pytest.fixture()
def tiny_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[Path, dict]:
    if not default_path().exists():
        pytest.skip(f"the LoCoMo file is not beside the checkout ({default_path()})")
    monkeypatch.setenv("RECAST_JOBS__RUN_ROOT", str(tmp_path))
    get_settings.cache_clear()
    try:
        main(["jobs", "run", "memgas", "--preset", "tiny", "--run-id", "ci", "--quiet"])
    finally:
        get_settings.cache_clear()
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "succeeded", out
    run_dir = tmp_path / "memgas" / "ci"
    return run_dir, json.loads((run_dir / "results.json").read_text())


def test_memgas_tiny_preset(tiny_run: tuple[Path, dict]) -> None:
    run_dir, results = tiny_run
    assert results["model"].startswith("local:SmolLM2") and results["questions"] >= 20
    r = results["retrieval"]
    assert set(r) >= {"bm25", "dense:session", "dense:turn", "dense:summary", "dense:keywords", "multi:router", "memgas"}
    for vals in r.values():
        assert 0 <= vals["recall@1"] <= vals["recall@3"] <= vals["recall@10"] <= 1
        assert 0 <= vals["ndcg@3"] <= 1
    # multi-granularity + router + graph beats retrieval by whole-session embeddings
    assert r["memgas"]["ndcg@3"] > r["dense:session"]["ndcg@3"]
    assert sum(results["router_mean_weights"].values()) == pytest.approx(1.0)
    qa = results["qa"]["memgas+filter"]
    assert results["qa_questions"] == 1 and 0 <= qa["f1"] <= 1
    example = results["qa_examples"][0]
    assert all(isinstance(example[k]["prediction"], str) for k in ("bm25", "memgas", "memgas+filter"))
    report = (run_dir / "report.md").read_text()
    assert "recall" in report.lower() and "| memgas |" in report
    assert (run_dir / "recall_at_k.png").stat().st_size > 5000
