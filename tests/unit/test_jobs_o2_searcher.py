"""O²-Searcher on the real local model, kept small for CI: the search environment answers from
the local corpus, a demonstration masks the retrieved text out of training, the warm start
lowers its loss, and the agent rolls out on the local model. (A GRPO step of the job takes
minutes on a busy 2-core CPU, so its tiny preset is not run in CI; the GRPO loss itself is
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
