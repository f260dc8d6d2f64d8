"""Mixture of Adapter Experts (MoAE), the fine-tuning module of S4D.

Each expert is a bottleneck adapter (down-projection, GELU, up-projection, AdaptFormer style as in
S4D's predecessor S2D); a noisy top-k router (Shazeer et al., 2017) picks ``top_k`` experts per
token: logits ``x W_g + ε · softplus(x W_n)`` with ε ~ N(0, 1) during training, softmax over the
kept logits. The module's output is added in parallel to the transformer block's MLP, scaled by
``scale``. Why: static and dynamic expression data pull shared weights in different directions
(negative transfer of vanilla multi-task fine-tuning); routing lets tokens of each kind use
different adapters while the backbone stays shared.

Load balancing: the Switch-Transformer form ``E · Σ_i f_i · P_i`` (f_i the share of tokens whose
first choice is expert i, P_i the mean router probability of i), weighted by the caller (S4D's
default coefficient 1e-3); it is minimal (1) when the experts are used equally.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BottleneckAdapter(nn.Module):
    def __init__(self, dim: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)  # starts as the identity of the block it joins
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(F.gelu(self.down(x)))


class MixtureOfAdapterExperts(nn.Module):
    def __init__(self, dim: int, num_experts: int = 4, top_k: int = 1, bottleneck: int = 64,
                 scale: float = 0.5, noisy: bool = True) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in 1..num_experts ({num_experts}), got {top_k}")
        self.experts = nn.ModuleList(BottleneckAdapter(dim, bottleneck) for _ in range(num_experts))
        self.gate = nn.Linear(dim, num_experts, bias=False)
        self.noise = nn.Linear(dim, num_experts, bias=False)
        nn.init.normal_(self.gate.weight, std=0.02)  # zero would tie every token at evaluation
        nn.init.zeros_(self.noise.weight)
        self.top_k, self.scale, self.noisy = top_k, scale, noisy
        self.aux_loss = torch.zeros(())
        self.last_choice: torch.Tensor | None = None
        """First-choice expert of every token of the last forward (for utilisation statistics)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        logits = self.gate(tokens)
        if self.noisy and self.training:
            logits = logits + torch.randn_like(logits) * F.softplus(self.noise(tokens))
        top_val, top_idx = logits.topk(self.top_k, dim=-1)
        weights = torch.softmax(top_val, dim=-1)
        out = torch.zeros_like(tokens)
        for slot in range(self.top_k):
            for e, expert in enumerate(self.experts):
                sel = top_idx[:, slot] == e
                if sel.any():
                    out[sel] += weights[sel, slot, None] * expert(tokens[sel])
        probs = torch.softmax(logits, dim=-1)
        share = F.one_hot(top_idx[:, 0], len(self.experts)).float().mean(0)
        self.aux_loss = len(self.experts) * (share * probs.mean(0)).sum()
        self.last_choice = top_idx[:, 0].detach()
        return self.scale * out.reshape(shape)
