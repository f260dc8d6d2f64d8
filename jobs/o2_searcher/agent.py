"""The search agent's rollouts with a trainable causal language model (any Hugging Face model:
the local default on CPU, a larger one on a GPU), and their token masks for GRPO.

A trajectory is: the chat prompt | the agent's turn | the environment's <information> | the
agent's next turn ... up to ``max_turns``; only the agent's tokens are trained (mask 1), the
retrieved text is context (mask 0), as in Search-R1 and O²-Searcher's training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from jobs.o2_searcher.environment import Question, SearchEnv
from jobs.o2_searcher.rewards import extract_queries

SYSTEM = ("You answer questions using a search engine. To search, write <search>query one; query two</search> "
          "and stop; the results come back as <information>...</information>. When you know enough, write "
          "<answer>...</answer>. For an open question, the answer lists key findings, one per line starting "
          "with '- '. For a closed question, the answer is a short phrase.")


@dataclass
class Trajectory:
    question: Question
    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    agent_text: str = ""
    queries: list[str] = field(default_factory=list)
    done: bool = False


def prompt_ids(tokenizer: Any, question: Question) -> list[int]:
    kind = "Open question" if question.open_ended else "Closed question"
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{kind}: {question.text}"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(text, add_special_tokens=False)


def _cut(text: str) -> tuple[str, str | None]:
    """The agent's turn up to its first closing </search> or </answer>, and which it was."""
    ends = [(text.find(tag), tag) for tag in ("</search>", "</answer>") if text.find(tag) >= 0]
    if not ends:
        return text, None
    pos, tag = min(ends)
    return text[:pos + len(tag)], tag


@torch.no_grad()
def rollout(model: Any, tokenizer: Any, questions: list[Question], env: SearchEnv, *, max_turns: int,
            max_new_tokens: int, temperature: float, max_context: int = 1024) -> list[Trajectory]:
    device = next(model.parameters()).device
    trajs = []
    for q in questions:
        ids = prompt_ids(tokenizer, q)
        trajs.append(Trajectory(q, list(ids), [0] * len(ids)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for turn in range(max_turns):
        live = [t for t in trajs if not t.done]
        if not live:
            break
        width = max(len(t.ids) for t in live)
        inputs = torch.full((len(live), width), pad, dtype=torch.long)
        attention = torch.zeros((len(live), width), dtype=torch.long)
        for i, t in enumerate(live):   # left padding for generation
            inputs[i, width - len(t.ids):] = torch.tensor(t.ids)
            attention[i, width - len(t.ids):] = 1
        out = model.generate(input_ids=inputs.to(device), attention_mask=attention.to(device), do_sample=temperature > 0,
                             temperature=max(temperature, 1e-5), top_p=1.0, max_new_tokens=max_new_tokens,
                             pad_token_id=pad)
        for t, row in zip(live, out[:, width:].tolist()):
            text, tag = _cut(tokenizer.decode(row, skip_special_tokens=True))
            agent = tokenizer.encode(text, add_special_tokens=False)
            t.ids += agent
            t.mask += [1] * len(agent)
            t.agent_text += text
            last_turn = turn == max_turns - 1
            if tag == "</search>" and not last_turn:
                queries = extract_queries(text)[:4]
                t.queries += queries
                info = "\n" + env.information(queries) + "\n"
                info_ids = tokenizer.encode(info, add_special_tokens=False)
                t.ids += info_ids
                t.mask += [0] * len(info_ids)
                if len(t.ids) > max_context:
                    t.done = True
            else:
                if tag == "</search>":
                    t.queries += extract_queries(text)[:4]
                t.done = True
    return trajs


def sequence_logprobs(model: Any, trajs: list[Trajectory], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs [N, T-1] of each trajectory's tokens (right-padded) and the agent mask.

    The vocabulary projection runs only at the agent's positions (zeros elsewhere): full logits
    of a batch of long trajectories are [N, T, 49k] floats, gigabytes on a CPU, while the agent
    writes a small share of the tokens."""
    device = next(model.parameters()).device
    width = max(len(t.ids) for t in trajs)
    ids = torch.full((len(trajs), width), pad, dtype=torch.long)
    attention = torch.zeros((len(trajs), width), dtype=torch.long)
    mask = torch.zeros((len(trajs), width), dtype=torch.float32)
    for i, t in enumerate(trajs):
        ids[i, :len(t.ids)] = torch.tensor(t.ids)
        attention[i, :len(t.ids)] = 1
        mask[i, :len(t.mask)] = torch.tensor(t.mask, dtype=torch.float32)
    ids, attention, mask = ids.to(device), attention.to(device), mask.to(device)
    hidden = model.base_model(input_ids=ids, attention_mask=attention).last_hidden_state[:, :-1]
    target_mask = mask[:, 1:]
    keep = target_mask.bool()
    logits = model.get_output_embeddings()(hidden[keep]).float()          # [M, V], M = agent tokens
    picked = torch.log_softmax(logits, dim=-1).gather(1, ids[:, 1:][keep].unsqueeze(1)).squeeze(1)
    logp = torch.zeros(target_mask.shape, dtype=picked.dtype, device=device)
    logp = logp.masked_scatter(keep, picked)
    return logp, target_mask
