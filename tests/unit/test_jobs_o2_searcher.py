"""O²-Searcher: the search environment answers from the local corpus; on the real local model a
demonstration masks the retrieved text out of training, the warm start lowers its loss and one
GRPO step of the training loop runs; the tiny preset runs the whole job through the CLI with the
small copy policy (tiny_policy.py) and asserts that GRPO raises both variants' training reward."""

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
def test_demonstrations_warm_start_and_a_grpo_step_on_the_local_model() -> None:
    import math

    import torch

    from jobs.o2_searcher.agent import prompt_ids
    from jobs.o2_searcher.environment import SearchEnv, load_closed
    from jobs.o2_searcher.rewards import OpenRewardWeights
    from jobs.o2_searcher.train import LanguageModelAgent, grpo_step
    from jobs.o2_searcher.warmstart import demonstration
    from jobs.reasoning.grpo import GRPOConfig

    questions, passages = load_closed(3, seed=0)
    env = SearchEnv(passages, mode="bm25", k=2)
    cell = {"policy_model": None, "gradient_checkpointing": True, "max_turns": 2, "max_new_tokens": 8,
            "temperature": 1.0, "micro_batch": 2, "warm_start_steps": 3, "warm_start_batch": 1, "warm_start_lr": 5e-5}
    agent = LanguageModelAgent(cell, env, torch.device("cpu"))
    tok = agent.tok
    demo = demonstration(tok, questions[0], env)
    assert demo.agent_text.startswith("<search>") and "<information>" not in demo.agent_text
    prompt = len(prompt_ids(tok, questions[0]))
    first_agent = demo.mask.index(1)
    assert first_agent == prompt and demo.mask[-1] == 1
    info = [i for i in range(first_agent, len(demo.ids)) if demo.mask[i] == 0]   # retrieved text: context only
    assert "<information>" in tok.decode([demo.ids[i] for i in info]) and len(info) > 20
    losses = agent.warm_start(questions[:1], seed=0)
    assert len(losses) == 3 and losses[-1] < losses[0]
    (traj,) = agent.rollout(agent.module, questions[:1], temperature=0.0)
    assert len(traj.ids) == len(traj.mask) and sum(traj.mask) > 0
    # one GRPO step of the training loop on the language model: rollouts, rewards, update
    opt = torch.optim.AdamW(agent.module.parameters(), lr=1e-5)
    stats = grpo_step(agent, agent.reference(), opt, [questions[0]] * 2, None, OpenRewardWeights(),
                      GRPOConfig(group_size=2, kl_beta=0.001), cell)
    assert 0 <= stats["reward"] <= 1 and math.isfinite(stats["kl"]) and stats["kl"] >= 0


@needs_papers
def test_tiny_agent_demonstrations_earn_the_rewards_and_its_actions_replay() -> None:
    import torch

    from jobs.o2_searcher import rewards as R
    from jobs.o2_searcher.environment import build_env, load_closed, load_open
    from jobs.o2_searcher.tiny_agent import TinyAgent, demonstration_action

    closed, passages = load_closed(20, seed=0)
    opened = load_open("test", 2)
    env = build_env(opened, [], passages, "bm25", 3, None)
    cell = {"max_turns": 2, "max_new_tokens": 48, "warm_start_steps": 15, "warm_start_batch": 8, "warm_start_lr": 3e-3}
    agent = TinyAgent(cell, env, torch.device("cpu"))
    demos = agent.rollout(None, closed + opened, 0.0, teacher=demonstration_action)
    usable = [d for d in demos if not d.unusable]
    assert len(usable) >= 18 and all(not d.unusable for d in demos[-2:])
    for d in usable:   # searched, then answered in the protocol's format, through the job's own rewards
        assert d.queries and R.format_reward(d.agent_text, d.question.open_ended) == 1.0
        if d.question.open_ended:   # the retrieved documents listed as findings
            assert len(R.extract_findings(R.extract_answer(d.agent_text))) == 3
        else:                        # the answer copied from a retrieved passage
            assert R.exact_match(R.extract_answer(d.agent_text), d.question.golds) == 1.0
    torch.manual_seed(0)
    trajs = agent.rollout(agent.module, closed[:4] + opened, temperature=1.0)
    logp, mask = agent.logprobs(agent.module, trajs)
    assert mask.sum(1).tolist() == [len(t.steps) for t in trajs]
    assert torch.isfinite(logp).all() and (logp <= 0).all() and (logp[mask.bool()] < 0).any()
    losses = agent.warm_start(closed + opened, seed=0)
    assert len(losses) == 15 and losses[-1] < 0.8 * losses[0]


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
        assert len(losses) == 30 and losses[-1] < losses[0]  # the shared warm start learns from demonstrations
    for name in ("closed", "unified"):  # GRPO raises each variant's own reward over its 30 steps
        curve = variants[name]["curve"]
        assert len(curve["reward"]) == 30 and all(math.isfinite(x) and x >= 0 for x in curve["kl"])
        s = results["summary"][name]
        assert s["reward_last_quarter"] > s["reward_first_quarter"] + 0.05, (name, curve["reward"])
    for s in results["summary"].values():
        assert s["open_f1"]["n"] == 4 and s["closed_em"]["n"] == 60
    assert (run_dir / "reward_curves.png").exists()
    assert "unified" in (run_dir / "report.md").read_text()
