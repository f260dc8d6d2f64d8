"""One-layer-transformer knowledge job: the synthetic world, the entropy floor, the model
variants, LoRA, and the tiny preset through the runner (the mechanism: out-of-distribution QA
accuracy is higher at high pretraining multiplicity than at multiplicity 1)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from jobs.knowledge_storage.data import World, biography_entropy
from jobs.knowledge_storage.model import OneLayerTransformer
from jobs.knowledge_storage.report import ood
from jobs.knowledge_storage.train import finetune, lr_factor
from jobs.runner import run_job


def _world() -> World:
    return World.sample(n_individuals=5, n_values=7, n_relations=3, templates=2, template_len=2,
                        rng=np.random.default_rng(0))


def test_biographies_state_every_fact_once_in_a_random_order() -> None:
    w = _world()
    rng = np.random.default_rng(1)
    bio = w.biography(2, rng)
    v = w.vocab
    assert bio[0] == v.name(2) and len(bio) == 1 + 3 * (2 + 2)
    targets = np.asarray(bio[1:])
    assert sorted(targets[w.value_positions()].tolist()) == sorted(v.value(int(x)) for x in w.facts[2])
    orders = {tuple(w.biography(2, rng)) for _ in range(40)}
    assert len(orders) > 10  # order and phrasing vary across draws
    corpus = w.corpus(3, rng)
    assert corpus.shape == (15, len(bio)) and (corpus[:3, 0] == v.name(0)).all()
    prompts, answers = w.qa(np.array([4]))
    assert prompts.tolist() == [[v.q, v.name(4), v.ask(r)] for r in range(3)]
    assert answers.tolist() == [v.value(int(x)) for x in w.facts[4]]
    assert max(corpus.max(), prompts.max()) < v.size


def test_entropy_floor_matches_brute_force_counting() -> None:
    # 3 relations, 2 templates: 3! orders x 2^3 phrasings, all equally likely
    assert biography_entropy(3, 2, 2) == pytest.approx(math.log(math.factorial(3) * 2 ** 3) / 12)


def test_attention_only_has_no_mlp_and_lora_starts_at_the_base_model() -> None:
    torch.manual_seed(0)
    full = OneLayerTransformer(50, d_model=16, d_mlp=32, context=8)
    att = OneLayerTransformer(50, d_model=16, d_mlp=32, context=8, use_mlp=False)
    assert att.mlp_in is None and sum(p.numel() for p in att.parameters()) < sum(p.numel() for p in full.parameters())
    x = torch.randint(0, 50, (3, 8))
    before = full(x)
    params = full.add_lora(rank=2)
    assert torch.allclose(full(x), before)
    trainable = [p for p in full.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in params} and len(params) == 12


def test_lowrank_finetuning_changes_adapters_and_new_token_rows_only() -> None:
    torch.manual_seed(0)
    base = OneLayerTransformer(20, d_model=8, d_mlp=16, context=4)
    prompts, answers = np.array([[1, 5, 2], [1, 6, 3]]), np.array([10, 11])
    tuned, _ = finetune(base, prompts, answers, mode="lowrank", schedule="constant", steps=20, batch=2, lr=1e-2,
                        rank=2, new_tokens=[1, 2, 3], rng=np.random.default_rng(0))
    moved = (tuned.tok.weight - base.tok.weight).abs().sum(1) > 0
    assert moved[[1, 2, 3]].all() and not moved[[0, 4, 5, 6, 10]].any()
    assert torch.equal(tuned.q.base.weight, base.q.weight) and torch.equal(tuned.unembed.weight, base.unembed.weight)
    assert not torch.equal(tuned.q.b, torch.zeros_like(tuned.q.b))
    full, _ = finetune(base, prompts, answers, mode="full", schedule="cosine", steps=5, batch=2, lr=1e-2, rank=2,
                       new_tokens=[], rng=np.random.default_rng(0))
    assert not torch.equal(full.unembed.weight, base.unembed.weight)


def test_lr_schedules() -> None:
    assert lr_factor("constant", 50, 100) == 1.0
    assert lr_factor("cosine", 0, 100) < 1.0 and lr_factor("cosine", 5, 100) == pytest.approx(1.0)
    assert lr_factor("cosine", 100, 100) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="schedule"):
        lr_factor("step", 0, 10)


def test_tiny_preset_extracts_more_at_high_multiplicity(tmp_path: Path) -> None:
    out = run_job("knowledge-storage", root=tmp_path, preset="tiny", quiet=True, parallelism=2)
    assert out.status == "succeeded", out.manifest.get("error")
    results = json.loads((out.run_dir / "results.json").read_text())
    lo, hi = ood(results, "attention+mlp", 1, 30, "full", "constant"), ood(results, "attention+mlp", 6, 30, "full", "constant")
    assert hi > lo + 0.05, (lo, hi)
    cells = {c["multiplicity"]: c["pretrain"] for c in results["cells"]}
    # multiplicity 1 memorizes its one biography but not the facts keyed on the name
    assert cells[1]["train"]["value_acc"] > 0.95 and cells[6]["fresh"]["value_acc"] > cells[1]["fresh"]["value_acc"]
    assert (out.run_dir / "phase_diagram.png").exists()
