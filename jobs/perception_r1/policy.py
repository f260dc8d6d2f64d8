"""The small trainable vision-language policy: a convolutional image encoder and a question
embedding condition a GRU decoder over the response vocabulary. A pure nn.Module; sampling and
scoring of token sequences live here because both GRPO and evaluation use them."""

from __future__ import annotations

import torch
from torch import nn

from jobs.perception_r1.task import BOS, EOS, QUESTIONS, VOCAB


class PerceptionPolicy(nn.Module):
    def __init__(self, hidden: int = 96, embed: int = 32) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 16, 2, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 1), nn.ReLU())
        self.image_proj = nn.Linear(32 * 3, hidden)   # sum, max and mean pooling over the grid cells
        self.question = nn.Embedding(len(QUESTIONS), hidden)
        self.tokens = nn.Embedding(len(VOCAB), embed)
        self.cell = nn.GRUCell(embed + hidden, hidden)
        self.head = nn.Linear(hidden, len(VOCAB))

    def context(self, images: torch.Tensor, questions: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(images)                     # [N, 32, 6, 6]: one vector per grid cell
        # sum pooling lets the policy count; max and mean help it notice presence and density
        pooled = torch.cat([feats.sum(dim=(2, 3)) / 4.0, feats.amax(dim=(2, 3)), feats.mean(dim=(2, 3))], dim=1)
        return torch.tanh(self.image_proj(pooled) + self.question(questions))

    def token_logprobs(self, images: torch.Tensor, questions: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced log p of each token of ``tokens`` [N, T] -> [N, T]."""
        ctx = self.context(images, questions)
        h = ctx
        prev = torch.full((tokens.shape[0],), BOS, dtype=torch.long, device=tokens.device)
        out = []
        for t in range(tokens.shape[1]):
            h = self.cell(torch.cat([self.tokens(prev), ctx], dim=1), h)
            logp = torch.log_softmax(self.head(h), dim=-1)
            out.append(logp.gather(1, tokens[:, t:t + 1]).squeeze(1))
            prev = tokens[:, t]
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def sample(self, images: torch.Tensor, questions: torch.Tensor, max_len: int = 9, greedy: bool = False,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Responses [N, max_len] and their mask (1 up to and including <eos>)."""
        ctx = self.context(images, questions)
        h = ctx
        n = images.shape[0]
        prev = torch.full((n,), BOS, dtype=torch.long, device=images.device)
        done = torch.zeros(n, dtype=torch.bool, device=images.device)
        toks, mask = [], []
        for _ in range(max_len):
            h = self.cell(torch.cat([self.tokens(prev), ctx], dim=1), h)
            logits = self.head(h)
            nxt = logits.argmax(-1) if greedy else torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(1)
            nxt = torch.where(done, torch.full_like(nxt, EOS), nxt)
            toks.append(nxt)
            mask.append((~done).float())
            done = done | (nxt == EOS)
            prev = nxt
        return torch.stack(toks, dim=1), torch.stack(mask, dim=1)
