"""O²-Searcher on the real local model, kept small for CI: the search environment answers from
the local corpus, a demonstration masks the retrieved text out of training, the warm start
lowers its loss, and the agent rolls out on the local model; the tiny preset runs the whole job
(warm start, one GRPO step per variant, evaluation, report) as the CLI does. A rising reward is
not asserted here: at this size no rollout earns one (see jobs/README.md); the GRPO loss itself is
tested in test_reasoning_core.py.)"""

from __future__ import annotations

import pytest

from jobs.reasoning import PAPERS_DIR

needs_papers = pytest.mark.skipif(not (PAPERS_DIR / "o2qa_test_gt.json").exists(),
                                  reason="shared/data/papers/o2qa_*_gt.json not beside the checkout")


@needs_papers
def test_bm25_environment_finds_the_fictional_passage() -> None:
    from jobs.o2_searcher.environment import SearchEnv, load_closed

    questions, passages = load_closed(20, seed=0)
    env = SearchEnv(passages, mode="bm25", k=3)
    found = 0
    for q in questions:
        query = q.text.removeprefix("Complete the sentence: ").removesuffix(" ...")
        found += any(q.golds[0].lower() in env.corpus[i].lower() for i in env.search([query])[0])
    assert found >= 12                        # the answer's passage is usually among the top 3
    assert env.information(["Zorgon Calidus government"]).startswith("<information>\n[1] ")


@needs_papers
def test_demonstrations_and_warm_start_on_the_local_model() -> None:
    from jobs.backends.text import local_model_and_tokenizer
    from jobs.o2_searcher.agent import prompt_ids, rollout
    from jobs.o2_searcher.environment import SearchEnv, load_closed
    from jobs.o2_searcher.warmstart import demonstration, warm_start

    questions, passages = load_closed(3, seed=0)
    env = SearchEnv(passages, mode="bm25", k=2)
    model, tok = local_model_and_tokenizer()
    demo = demonstration(tok, questions[0], env)
    assert demo.agent_text.startswith("<search>") and "<information>" not in demo.agent_text
    prompt = len(prompt_ids(tok, questions[0]))
    first_agent = demo.mask.index(1)
    assert first_agent == prompt and demo.mask[-1] == 1
    info = [i for i in range(first_agent, len(demo.ids)) if demo.mask[i] == 0]   # retrieved text: context only
    assert "<information>" in tok.decode([demo.ids[i] for i in info]) and len(info) > 20
    losses = warm_start(model, tok, questions[:1], env, steps=3, batch=1, lr=5e-5, seed=0)
    assert len(losses) == 3 and losses[-1] < losses[0]
    (traj,) = rollout(model, tok, questions[:1], env, max_turns=2, max_new_tokens=8, temperature=0.0)
    assert len(traj.ids) == len(traj.mask) and sum(traj.mask) > 0


def test_policy_loads_from_a_model_directory() -> None:
    from jobs.backends.local import converted_dir
    from jobs.backends.text import local_model_and_tokenizer
    from jobs.o2_searcher.train import load_policy

    local_model_and_tokenizer()                           # makes sure the converted directory exists
    model, tok = load_policy(str(converted_dir()))
    assert model.config.vocab_size >= len(tok) > 1000


@needs_papers
def test_o2_searcher_tiny_preset(tmp_path, monkeypatch, capsys) -> None:
    import json
    import math

    from recast.cli import main
    from recast.settings import get_settings

    monkeypatch.setenv("RECAST_JOBS__RUN_ROOT", str(tmp_path))
    get_settings.cache_clear()
    try:
        main(["jobs", "run", "o2-searcher", "--preset", "tiny", "--run-id", "ci", "--parallelism", "2", "--quiet"])
    finally:
        get_settings.cache_clear()
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "succeeded", out
    run_dir = tmp_path / "o2-searcher" / "ci"
    results = json.loads((run_dir / "results.json").read_text())
    variants = {v["variant"]: v for v in results["variants"]}
    assert set(variants) == {"untrained", "closed", "unified"}
    for v in variants.values():
        losses = v["warm_start_loss"]
        assert len(losses) == 2 and losses[-1] < losses[0]  # the shared warm start learns the protocol
    for name in ("closed", "unified"):  # one GRPO step each, with finite rewards and KL to the reference
        curve = variants[name]["curve"]
        assert len(curve["reward"]) == 1 and len(curve["kl"]) == 1
        assert all(math.isfinite(x) and x >= 0 for x in curve["reward"] + curve["kl"])
    for s in results["summary"].values():
        assert s["open_f1"]["n"] == 1 and s["closed_em"]["n"] == 1
    assert (run_dir / "reward_curves.png").exists()
    assert "unified" in (run_dir / "report.md").read_text()
