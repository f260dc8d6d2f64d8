"""The paper's one-layer transformer: single-head causal self-attention plus an MLP, and the
attention-only variant; LoRA adapters for low-rank fine-tuning.

The paper analyses one attention layer (filtering: the query position attends to the subject token)
followed by an MLP (storing: subject and relation features map to the answer). One head is our
reading of the paper's stylized model (no official code was available to check); with several heads
an attention-only layer could split relations across heads, which is a different question. Layer
norms are left out (a stylized model); a residual stream and learned positions are kept.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class LoRALinear(nn.Module):
    """W x + (alpha / r) B A x with W frozen, A Gaussian, B zero: starts equal to the base layer."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None):
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.a = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.b = nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = (alpha if alpha is not None else rank) / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * F.linear(F.linear(x, self.a), self.b)


class OneLayerTransformer(nn.Module):
    def __init__(self, vocab_size: int, d_model: int = 64, d_mlp: int = 256, context: int = 32,
                 use_mlp: bool = True):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.k = nn.Linear(d_model, d_model, bias=False)
        self.v = nn.Linear(d_model, d_model, bias=False)
        self.o = nn.Linear(d_model, d_model, bias=False)
        self.mlp_in = nn.Linear(d_model, d_mlp) if use_mlp else None
        self.mlp_out = nn.Linear(d_mlp, d_model) if use_mlp else None
        self.unembed = nn.Linear(d_model, vocab_size, bias=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02 if isinstance(m, nn.Embedding) else 1 / math.sqrt(m.weight.shape[1]))
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos.weight[: ids.shape[1]]
        att = F.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x), is_causal=True)
        h = x + self.o(att)
        if self.mlp_in is not None:
            h = h + self.mlp_out(F.gelu(self.mlp_in(h)))
        return self.unembed(h)

    def add_lora(self, rank: int) -> list[nn.Parameter]:
        """Freeze everything and wrap the attention and MLP matrices with rank-`rank` adapters; return
        the trainable parameters."""
        for p in self.parameters():
            p.requires_grad_(False)
        names = ["q", "k", "v", "o"] + (["mlp_in", "mlp_out"] if self.mlp_in is not None else [])
        params: list[nn.Parameter] = []
        for name in names:
            wrapped = LoRALinear(getattr(self, name), rank)
            setattr(self, name, wrapped)
            params += [wrapped.a, wrapped.b]
        return params
