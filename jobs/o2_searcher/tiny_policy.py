"""A small token-level search policy that trains in seconds on a CPU: the ``tiny`` agent.

Why: a GRPO step of the 135M language model takes ~30 s here and its rollouts earn almost no
reward at that budget, so a rising reward curve cannot be shown in CI with it. This policy keeps
everything else of the job -- the search environment, the multi-turn protocol, the rewards and
the GRPO objective -- and replaces only the language model by a pointer network over a compact
vocabulary: six protocol tokens (``<search>``, ``</search>``, ``<answer>``, ``</answer>``, the query
separator ``;`` and the finding bullet ``- ``) and copy actions, one per word of the visible
context (the question and the documents retrieved so far). A query is written by copying words;
an answer span is two copies, its first and its last word (an extractive reader, as in DrQA).

A word is seen only through lexical features (jobs/o2_searcher/tiny_agent.py: in the question or
not, its IDF in the corpus, overlap of its neighbours with the question, punctuation, position),
never through its identity, so the policy cannot memorise answers: reward comes only from
searching for the right document and copying the right span from what came back.

A GRU cell carries the state over the actions of a trajectory; its input at each step is the
kind of the previous action and the features of the word it copied. Pure nn.Module: the agent
(``tiny_agent.py``) builds the candidates, the legal-action masks and the text.
"""

from __future__ import annotations

import torch
from torch import nn

# action kinds: the six protocol tokens are also the first six actions; copy actions follow
SEARCH, END_SEARCH, ANSWER, END_ANSWER, SEPARATOR, BULLET = range(6)
FIXED = ("<search>", "</search>", "<answer>", "</answer>", ";", "- ")
QUERY_WORD, SPAN_START, SPAN_END, INFORMATION, OPEN_QUESTION, CLOSED_QUESTION = range(6, 12)
KINDS = 12


class TinySearchPolicy(nn.Module):
    def __init__(self, n_features: int, hidden: int = 64, proj: int = 32) -> None:
        super().__init__()
        self.hidden = hidden
        self.kind = nn.Embedding(KINDS, hidden)
        self.word = nn.Sequential(nn.Linear(n_features, proj), nn.Tanh())
        self.cell = nn.GRUCell(hidden + proj, hidden)
        self.fixed = nn.Linear(hidden, len(FIXED))
        self.query = nn.Linear(hidden, proj)
        self.direct = nn.Linear(n_features, 1)

    def initial_state(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(n, self.hidden, device=device)

    def advance(self, h: torch.Tensor, kinds: torch.Tensor, prev_features: torch.Tensor) -> torch.Tensor:
        """The state after the previous action: its kind [N] and the copied word's features [N, F]."""
        return self.cell(torch.cat([self.kind(kinds), self.word(prev_features)], dim=-1), h)

    def logits(self, h: torch.Tensor, candidates: torch.Tensor, legal: torch.Tensor) -> torch.Tensor:
        """Logits over the protocol tokens and the copy actions: h [..., H], candidates' features
        [..., P, F], legal [..., 6 + P] (bool) -> [..., 6 + P], illegal actions at -inf."""
        copy = (self.word(candidates) * self.query(h).unsqueeze(-2)).sum(-1) + self.direct(candidates).squeeze(-1)
        out = torch.cat([self.fixed(h), copy], dim=-1)
        return out.masked_fill(~legal, float("-inf"))

    def replay(self, kinds: torch.Tensor, prev_features: torch.Tensor, candidates: torch.Tensor, legal: torch.Tensor,
               actions: torch.Tensor) -> torch.Tensor:
        """Teacher-forced log-probs [N, T] of recorded ``actions`` [N, T] (padding steps: any legal
        action, masked out by the caller), given each step's inputs as ``advance`` and ``logits`` take them."""
        h = self.initial_state(kinds.shape[0], kinds.device)
        states = []
        for t in range(kinds.shape[1]):
            h = self.advance(h, kinds[:, t], prev_features[:, t])
            states.append(h)
        logp = torch.log_softmax(self.logits(torch.stack(states, dim=1), candidates, legal), dim=-1)
        return logp.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
