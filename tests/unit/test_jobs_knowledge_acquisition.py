"""Factual-knowledge acquisition job: the metrics on known curves, the injection plan, the
tokenizer and probe scoring, and the tiny preset through the runner (the mechanism: an injected
fact's log-probability rises after injection, beyond the drift of never-injected controls)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from jobs.knowledge_acquisition.analysis import probe_series
from jobs.knowledge_acquisition.corpus import (
    DATA_DIR,
    PROBE_KINDS,
    Probe,
    WordByteTokenizer,
    build_probes,
    load_fictional,
)
from jobs.knowledge_acquisition.experiment import chunk, eval_schedule, injection_plan, probe_logprobs
from jobs.knowledge_acquisition.gpt import SmallGPT
from jobs.knowledge_acquisition.metrics import acquisition, fit_forgetting, log_offsets, retention_curve
from jobs.runner import run_job

# The Fictional Knowledge documents are read from shared/data/papers/ beside the checkout, never
# copied into it (as ETTh1 for the forecasting tests): without them these tests cannot run.
needs_papers_data = pytest.mark.skipif(not (DATA_DIR / "fictional_knowledge_paraphrased.json").exists(),
                                       reason="shared/data/papers/fictional_knowledge*.json not beside the checkout")


def test_acquisition_finds_the_local_maximum_and_the_gain() -> None:
    steps = [0, 1, 2, 3, 4, 5, 6]
    values = [-5.0, -5.0, -3.0, -3.5, -2.5, -4.0, -4.5]
    t_lam, top, eff = acquisition(steps, values, injection=1, window=3)
    assert (t_lam, top, eff) == (4, -2.5, 2.5)
    with pytest.raises(ValueError, match="no evaluation"):
        acquisition([0, 10], [0.0, 1.0], injection=1, window=3)


def test_forgetting_fit_tells_a_power_law_from_an_exponential() -> None:
    t = log_offsets(200, 30)
    power = fit_forgetting(t, [0.9 * x ** -0.4 for x in t])
    expo = fit_forgetting(t, [0.9 * np.exp(-x / 30) for x in t])
    assert power["power_r2"] > 0.99 and power["power_r2"] > power["exp_r2"]
    assert abs(power["power_alpha"] - 0.4) < 0.01
    assert expo["exp_r2"] > 0.99 and expo["exp_r2"] > expo["power_r2"]
    assert power["decay_constant"] > 0  # R falls with ln t


def test_retention_is_the_share_of_the_gain_kept() -> None:
    # gain of 2 at the local maximum (step 2), half of it left 4 steps later
    steps, values = [0, 1, 2, 3, 6], [0.0, 0.0, 2.0, 1.5, 1.0]
    assert retention_curve([(steps, values)], [[1]], window=2, offsets=[4]) == pytest.approx([0.5])


@needs_papers_data
def test_injection_plan_follows_the_official_split_and_staggers() -> None:
    items = load_fictional()
    assert len(items) == 130 and all(len(items[i]["paraphrases"]) == 9 for i in range(40))
    plan = injection_plan(items, docs_per_regime=2, control_docs=2, n_injections=10, interval=10, first_step=3)
    by_regime = {p.regime: [q.doc for q in plan if q.regime == p.regime] for p in plan}
    assert by_regime == {"paraphrase": [0, 1], "duplicate": [40, 41], "once": [80, 81], "control": [120, 121]}
    para = plan[0]
    assert para.steps == [3 + 10 * k for k in range(10)] and len(set(para.versions)) == 10
    dup = next(p for p in plan if p.regime == "duplicate")
    assert len(dup.versions) == 10 and len(set(dup.versions)) == 1 and dup.steps[0] == 4
    once = next(p for p in plan if p.regime == "once")
    assert len(once.steps) == 1
    with pytest.raises(ValueError, match="injection_interval"):
        injection_plan(items, 5, 0, 10, interval=10, first_step=0)
    sched = eval_schedule(para, total=120, window=3, eval_every=50)
    assert all(s in sched for t in para.steps for s in range(t, t + 4)) and sched[-1] == 120


def test_tokenizer_falls_back_to_bytes_and_chunks_pad_targets() -> None:
    tok = WordByteTokenizer.fit(["the cat sat on the mat"] * 3, vocab_size=260)
    ids = tok.encode("the Zorgon")
    assert ids[0] >= 256 and bytes(ids[1:]) == " Zorgon".encode()
    pieces = chunk(list(range(10)), context=4)
    assert [p[0] for p in pieces] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 0, 0, 0]]
    assert pieces[-1][1] == [9, -100, -100, -100]


@needs_papers_data
def test_probe_logprob_is_the_mean_target_log_probability() -> None:
    torch.manual_seed(0)
    model = SmallGPT(300, d_model=16, n_layer=1, n_head=2, context=16)
    probe = Probe(0, "mem", input_ids=[5, 6, 7], target_ids=[8, 9])
    got = probe_logprobs(model, [probe, Probe(0, "gen", [1], [2])])
    logp = torch.log_softmax(model(torch.tensor([[5, 6, 7, 8]])), -1)[0]
    assert got[0] == pytest.approx(((logp[2, 8] + logp[3, 9]) / 2).item(), abs=1e-5)
    items = load_fictional()
    probes = build_probes(items, [0], tok := WordByteTokenizer.fit(["a b"], 258), probe_context=8)
    assert len(probes) == 15 and {p.kind for p in probes} == set(PROBE_KINDS)
    assert all(len(p.input_ids) <= 8 for p in probes) and probes[0].target_ids == tok.encode(" " + items[0]["mem_target"][0])


@needs_papers_data
def test_tiny_preset_runs_and_injected_facts_gain_log_probability(tmp_path: Path) -> None:
    out = run_job("knowledge-acquisition", root=tmp_path, preset="tiny", quiet=True, parallelism=2)
    assert out.status == "succeeded", out.manifest.get("error")
    results = json.loads((out.run_dir / "results.json").read_text())
    base = results["runs"][0]
    # every regime x probe kind gains log-probability right after an injection (effectivity > 0)
    assert all(g["effectivity_mean"] > 0 for g in base["groups"].values())
    # literally: right after its first injection, an injected fact's memorization probes score higher
    cell = json.loads(sorted((out.run_dir / "cells").glob("*/*.json"))[0].read_text())["result"]
    rises = [acquisition(steps, vals, inj[0], 3)[2] > 0 for regime in ("paraphrase", "duplicate", "once")
             for steps, vals, inj in probe_series(cell, regime, "mem")]
    assert len(rises) == 30 and sum(rises) >= 0.8 * len(rises)
    report = (out.run_dir / "report.md").read_text()
    assert "retainability" in report and (out.run_dir / "logprob_trajectories.png").exists()
