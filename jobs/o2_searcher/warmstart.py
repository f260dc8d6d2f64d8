"""A supervised warm start on protocol demonstrations before GRPO.

Why: the 135M local model never writes the search/answer protocol on its own (every rollout of the
untrained agent scored zero, so every GRPO group had zero advantage and RL had no signal). A few
steps of supervised training on demonstrations teach the format, as the cold-start phase of
RL-trained search agents does. A demonstration searches with the question, reads the results and
answers: closed questions with their training answer, open questions with findings copied from
what the search returned (never the reference findings, which are the evaluation's target).
``warm_start_steps = 0`` turns it off.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from jobs.o2_searcher.agent import Trajectory, prompt_ids, sequence_logprobs
from jobs.o2_searcher.environment import Question, SearchEnv


def demonstration(tokenizer: Any, q: Question, env: SearchEnv) -> Trajectory:
    query = q.text.removeprefix("Complete the sentence: ").removesuffix(" ...")
    ids = prompt_ids(tokenizer, q)
    t = Trajectory(q, list(ids), [0] * len(ids))

    def agent(text: str) -> None:
        piece = tokenizer.encode(text, add_special_tokens=False)
        t.ids += piece
        t.mask += [1] * len(piece)
        t.agent_text += text

    agent(f"<search>{query}</search>")
    info = "\n" + env.information([query]) + "\n"
    piece = tokenizer.encode(info, add_special_tokens=False)
    t.ids += piece
    t.mask += [0] * len(piece)
    if q.open_ended:
        hits = env.search([query])[0]
        agent("<answer>\n" + "\n".join(f"- {env.corpus[i]}" for i in hits) + "\n</answer>")
    else:
        agent(f"<answer>{q.golds[0]}</answer>")
    agent(tokenizer.eos_token or "")
    return t


def warm_start(model: Any, tokenizer: Any, questions: list[Question], env: SearchEnv, *, steps: int, batch: int,
               lr: float, seed: int, micro_batch: int = 2) -> list[float]:
    """Supervised steps on demonstrations; returns the loss per step."""
    if steps <= 0:
        return []
    rng = random.Random(seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    model.train()
    for _ in range(steps):
        demos = [demonstration(tokenizer, q, env) for q in rng.sample(questions, min(batch, len(questions)))]
        tokens = max(1, sum(sum(d.mask) for d in demos))
        opt.zero_grad()
        total = 0.0
        for lo in range(0, len(demos), micro_batch):   # token-mean NLL of the batch, accumulated
            logp, mask = sequence_logprobs(model, demos[lo:lo + micro_batch], pad)
            loss = -(logp * mask).sum() / tokens
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(total)
    model.eval()
    return losses
