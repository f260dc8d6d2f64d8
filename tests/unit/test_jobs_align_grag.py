"""`recast jobs run align-grag --preset tiny` on the real local models (PCST retrieval, the
model's reasoning as alignment targets, the aligner GNN trained, pruning, the generator scored in
four conditions), plus the losses and the tree search on hand-made inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from jobs.align_grag.aligner import Aligner, info_nce, kl_node_loss
from jobs.align_grag.graph import Graph, data_path, greedy_pcst, parse_graph, pcst_subgraph
from recast.cli import main
from recast.settings import get_settings


def test_graph_parsing_and_prize_collecting_tree():
    triples = parse_graph("(Cannabis; synonym of; marijuana)(legal; causes; more available)")
    assert triples == [("cannabis", "synonym of", "marijuana"), ("legal", "causes", "more available")]
    g = Graph.from_triples(triples)
    assert g.nodes == ["cannabis", "marijuana", "legal", "more available"] and g.text({0, 1}) == "(cannabis; synonym of; marijuana)"
    path = [(0, 1), (1, 2), (2, 3), (3, 4)]
    # both prized ends are worth joining through two cheap middle nodes; node 4 is not
    assert greedy_pcst(np.array([3.0, 0, 0, 3.0, 0]), np.full(4, 0.5), path) == {0, 1, 2, 3}
    assert greedy_pcst(np.array([3.0, 0, 0, 0.4, 0]), np.full(4, 0.5), path) == {0}
    assert pcst_subgraph(np.array([0.9, 0.1, 0.2, 0.8, 0.0]), np.zeros(4), path, top_k=2) >= {0, 3}


def test_losses_reward_alignment():
    batch = torch.tensor([0, 0, 1, 1, 1])
    target = torch.tensor([0.9, 0.1, 0.2, 0.3, 0.5])
    matched = torch.log(target)
    assert kl_node_loss(matched, target, batch).item() == pytest.approx(0.0, abs=1e-5)
    assert kl_node_loss(-matched, target, batch).item() > 0.1
    emb = torch.eye(4)
    assert info_nce(emb, emb).item() < info_nce(emb, emb.flip(0)).item()
    model = Aligner(in_dim=8, hidden=16, out_dim=8)
    scores, g = model(torch.randn(5, 8), torch.tensor([[0, 1, 2, 3], [1, 0, 3, 4]]), torch.randn(4, 8), batch,
                      torch.randn(2, 8))
    assert scores.shape == (5,) and g.shape == (2, 8)


@pytest.fixture()
def tiny_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[Path, dict]:
    if not data_path().exists():
        pytest.skip(f"the ExplaGraphs file is not beside the checkout ({data_path()})")
    monkeypatch.setenv("RECAST_JOBS__RUN_ROOT", str(tmp_path))
    get_settings.cache_clear()
    try:
        main(["jobs", "run", "align-grag", "--preset", "tiny", "--run-id", "ci", "--quiet"])
    finally:
        get_settings.cache_clear()
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "succeeded", out
    run_dir = tmp_path / "align-grag" / "ci"
    return run_dir, json.loads((run_dir / "results.json").read_text())


def test_align_grag_tiny_preset(tiny_run: tuple[Path, dict]) -> None:
    run_dir, results = tiny_run
    assert results["model"].startswith("local:SmolLM2")
    loss = results["training_loss"]
    assert len(loss) == 5 and loss[-1] < loss[0]  # the aligner learns its targets
    test = results["test"]
    assert set(test) == {"no graph", "retrieved subgraph", "pruned by similarity", "aligned + pruned"}
    assert test["no graph"]["triples"] == 0 and test["retrieved subgraph"]["triples"] > 0
    # pruning shrinks the prompt; every accuracy is a share of the test samples
    assert test["aligned + pruned"]["prompt_chars"] < test["retrieved subgraph"]["prompt_chars"]
    assert all(v["accuracy"] in (0, 0.25, 0.5, 0.75, 1.0) for v in test.values())
    assert "| aligned + pruned |" in (run_dir / "report.md").read_text()
