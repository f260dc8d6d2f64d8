"""DLF: Dynamic Low-Order-Aware Fusion for CTR prediction (SIGIR 2025), as published.

Follows the authors' code (github.com/Keffee/DLF, FuxiCTR-based), whose
classes ``variant`` selects:

* ``"dlf"``: ``models.py:DLF`` with ``DLF_layers.py:DLFLayer``
* ``"att_cross"``: ``DLF_att_cross`` / ``DLFLayer_att_cross``
* ``"att_self"``: ``DLF_att_self`` / ``DLFLayer_att_self``
* ``"att_self_gate"``: ``DLF_att_self_gate`` / ``DLFLayer_att_self_gate``

(the project's earlier reading is ``training/models/dlf_branch_softmax.py``).
E^(1) = x0 [B, F, d] are the field embeddings, E^(l) [B, F_l, d] a layer's
input. Branches, with W in R^{F_l x R} (kaiming-uniform) and
MLP = Linear(h) -> BatchNorm -> ReLU -> Dropout -> Linear (``block_layers``):

* compress (LCB):   C  = (E^(l)^T W_C)^T                                   [n_compress, d]
* high-order (FMB): H  = MLP(LN(vec(E^(l) (E^(l)^T W_H))))                 [n_fm, d]
* low-order (FMB x0): L = MLP(LN(vec(P0(x0) (E^(l)^T W_L))))               [n_fm, d]
  where P0 projects the F raw fields to F_l tokens (identity when equal): each
  layer keeps an explicit interaction with the first-order fields.
* attention (att_*): multi-head self-attention over tokens (Q, K, V without
  bias, no 1/sqrt(d) scaling: the official code passes a boolean ``use_scale``
  that is False), its [F_in, d] output flattened d-major -> LN -> MLP -> [n_att, d].

Fusion and residual, P_res the token projection F_l -> F_{l+1} (identity when equal):

* dlf / att_cross / att_self:  E^(l+1) = LN_d(concat(H, L, C[, A]) + P_res E^(l))
* att_self_gate (no low-order branch): tokens T = concat(C, H, A); learnable
  queries Q [F_{l+1}, d] attend over them, S = softmax(Q T^T) T; a softmax gate
  g = softmax(W_g [mean C, mean H, mean A]) mixes the branch means,
  m = sum_k g_k mean_k; E^(l+1) = LN_d(S + m + P_res E^(l)).

The attention input is all layer tokens (att_cross, n_att = ``n_attention``),
or for att_self and att_self_gate n_att = F tokens: the gate variant reads the
last F tokens (the previous layer's attention slots; all fields in layer 1).
The official att_self layer means to do the same but its test compares F_l
with n_compress + n_fm + n_att (the model has 2 n_fm FM tokens), so it always
attends over all tokens; we follow the code as it runs and offer the intent
as ``att_self_own_tokens``. The logit is MLP(vec(E^(L))) (``head_layers``,
BatchNorm). Dense features become one token each, v_i * w_i (FuxiCTR's numeric
embedding). Defaults are the official config (DLF_default: 3 layers, 16/16/16
tokens, rank 24, 512-unit blocks and head, dropout 0); the trainer's recipe
(xavier-normal Linear init, N(0, 1e-4) embeddings, Adam) is training/recipes.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from training.models.common import MLP

Variant = Literal["dlf", "att_cross", "att_self", "att_self_gate"]


@dataclass
class DLFConfig:
    variant: Variant = "dlf"
    num_layers: int = 3
    n_compress: int = 16
    """num_emb_lcb: tokens of the linear compress block."""
    n_fm: int = 16
    """num_emb_fmb: tokens of each factorization block."""
    n_attention: int = 16
    """num_emb_att of att_cross (att_self / att_self_gate use the number of fields, as the official models)."""
    rank: int = 24
    block_hidden: int = 512
    block_layers: int = 2
    head_hidden: int = 512
    head_layers: int = 2
    dropout: float = 0.0
    num_heads: int = 2
    attention_scale: bool = False
    """Divide attention scores by sqrt(head dim) (the official code never does)."""
    att_self_own_tokens: bool = False
    """att_self: attend over the previous layer's attention tokens only (the official code's intent)."""


def official_mlp(in_dim: int, layers: int, hidden: int, out_dim: int, dropout: float) -> MLP:
    """DLF_MLP: (layers - 1) x [Linear(hidden), BatchNorm, ReLU, Dropout], then Linear(out_dim)."""
    return MLP(in_dim, (hidden,) * (layers - 1), dropout, batch_norm=True, out_dim=out_dim)


class TokenProjection(nn.Module):
    """X [B, n_in, d] -> (X^T W)^T [B, n_out, d], W in R^{n_in x n_out}, no bias
    (DLF_LinearCompressBlock and DLF_ResidualProjection)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        nn.init.kaiming_uniform_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x.transpose(1, 2), self.weight).transpose(1, 2)


class FactorizationBlock(nn.Module):
    """MLP(LN(vec(left (X^T W)))): left = X (high order) or the projected x0 (low order)."""

    def __init__(self, n_in: int, n_out: int, d: int, rank: int, layers: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, rank))
        nn.init.kaiming_uniform_(self.weight)
        self.norm = nn.LayerNorm(n_in * rank)
        self.mlp = official_mlp(n_in * rank, layers, hidden, n_out * d, dropout)
        self.n_out, self.d = n_out, d

    def forward(self, x: torch.Tensor, left: torch.Tensor | None = None) -> torch.Tensor:
        compressed = torch.matmul(x.transpose(1, 2), self.weight)  # [B, d, R]
        inter = torch.bmm(x if left is None else left, compressed)  # [B, n_in, R]
        return self.mlp(self.norm(inter.flatten(1))).view(-1, self.n_out, self.d)


class AttentionBlock(nn.Module):
    """DLF_MultiHeadSelfAttention: self-attention over n_in tokens, then LN -> MLP to n_out tokens."""

    def __init__(self, n_in: int, n_out: int, d: int, heads: int, layers: int, hidden: int, dropout: float,
                 scale: bool) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"embedding dim {d} must be divisible by num_heads={heads}")
        self.q, self.k, self.v = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.heads, self.head_dim, self.scale = heads, d // heads, scale
        self.attn_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.norm = nn.LayerNorm(n_in * d)
        self.mlp = official_mlp(n_in * d, layers, hidden, n_out * d, dropout)
        self.n_out, self.d = n_out, d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2) for proj in (self.q, self.k, self.v))
        scores = torch.matmul(q, k.transpose(-1, -2))
        if self.scale:
            scores = scores / self.head_dim ** 0.5
        out = torch.matmul(self.attn_dropout(scores.softmax(dim=-1)), v)  # [B, H, n, hd]
        out = out.transpose(1, 2).reshape(b, n, self.d)
        flat = out.transpose(1, 2).reshape(b, -1)  # d-major, as the official code flattens
        return self.mlp(self.norm(flat)).view(b, self.d, self.n_out).transpose(1, 2)


class DLFLayer(nn.Module):
    """One layer of the plain / att_cross / att_self variants."""

    def __init__(self, f1: int, fl: int, d: int, cfg: DLFConfig, n_att: int, att_in: int) -> None:
        super().__init__()
        block = (cfg.rank, cfg.block_layers, cfg.block_hidden, cfg.dropout)
        self.compress = TokenProjection(fl, cfg.n_compress)
        self.high = FactorizationBlock(fl, cfg.n_fm, d, *block)
        self.low = FactorizationBlock(fl, cfg.n_fm, d, *block)
        self.x0_projection = TokenProjection(f1, fl) if f1 != fl else None
        self.attention = (AttentionBlock(att_in, n_att, d, cfg.num_heads, cfg.block_layers, cfg.block_hidden,
                                         cfg.dropout, cfg.attention_scale) if n_att else None)
        self.att_in = att_in
        self.f_out = cfg.n_compress + 2 * cfg.n_fm + n_att
        self.residual = TokenProjection(fl, self.f_out) if fl != self.f_out else None
        self.norm = nn.LayerNorm(d)

    def forward(self, el: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        x0 = x0 if self.x0_projection is None else self.x0_projection(x0)
        parts = [self.high(el), self.low(el, left=x0), self.compress(el)]
        if self.attention is not None:
            parts.append(self.attention(el[:, -self.att_in:]))
        residual = el if self.residual is None else self.residual(el)
        return self.norm(torch.cat(parts, dim=1) + residual)


class GatedAttentionLayer(nn.Module):
    """DLFLayer_att_self_gate: learnable-query attention over the branch tokens plus a softmax branch gate."""

    def __init__(self, fl: int, d: int, cfg: DLFConfig, n_att: int) -> None:
        super().__init__()
        block = (cfg.rank, cfg.block_layers, cfg.block_hidden, cfg.dropout)
        self.compress = TokenProjection(fl, cfg.n_compress)
        self.high = FactorizationBlock(fl, cfg.n_fm, d, *block)
        self.attention = AttentionBlock(n_att, n_att, d, cfg.num_heads, cfg.block_layers, cfg.block_hidden,
                                        cfg.dropout, cfg.attention_scale)
        self.n_att = n_att
        self.f_out = cfg.n_compress + cfg.n_fm + n_att
        self.queries = nn.Parameter(torch.randn(self.f_out, d))
        self.gate = nn.Linear(3 * d, 3)
        self.residual = TokenProjection(fl, self.f_out) if fl != self.f_out else None
        self.norm = nn.LayerNorm(d)

    def forward(self, el: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        branches = [self.compress(el), self.high(el), self.attention(el[:, -self.n_att:])]
        tokens = torch.cat(branches, dim=1)  # [B, f_out, d]
        weights = torch.softmax(torch.matmul(self.queries, tokens.transpose(1, 2)), dim=-1)  # [B, f_out, f_out]
        attended = torch.bmm(weights, tokens)
        means = [b.mean(dim=1) for b in branches]
        g = torch.softmax(self.gate(torch.cat(means, dim=1)), dim=1)  # [B, 3]
        mixed = sum(g[:, k, None] * m for k, m in enumerate(means))
        residual = el if self.residual is None else self.residual(el)
        return self.norm(attended + mixed.unsqueeze(1) + residual)


class DLF(nn.Module):
    def __init__(self, num_fields: int, embedding_dim: int, num_dense: int, config: DLFConfig | None = None) -> None:
        super().__init__()
        cfg = config or DLFConfig()
        self.cfg = cfg
        self.embedding_dim = d = embedding_dim
        self.dense_weight = nn.Parameter(torch.empty(num_dense, d)) if num_dense else None
        if self.dense_weight is not None:
            nn.init.xavier_normal_(self.dense_weight)
        f1 = num_fields + num_dense
        layers: list[nn.Module] = []
        fl = f1
        for index in range(cfg.num_layers):
            if cfg.variant == "att_self_gate":
                layer: nn.Module = GatedAttentionLayer(fl, d, cfg, n_att=f1)
            elif cfg.variant == "dlf":
                layer = DLFLayer(f1, fl, d, cfg, n_att=0, att_in=fl)
            else:
                n_att = cfg.n_attention if cfg.variant == "att_cross" else f1
                own = cfg.variant == "att_self" and cfg.att_self_own_tokens and index > 0
                layer = DLFLayer(f1, fl, d, cfg, n_att=n_att, att_in=n_att if own else fl)
            layers.append(layer)
            fl = layer.f_out
        self.layers = nn.ModuleList(layers)
        self.head = official_mlp(fl * d, cfg.head_layers, cfg.head_hidden, 1, cfg.dropout)

    def forward(self, field_emb: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        x0 = field_emb
        if self.dense_weight is not None:
            x0 = torch.cat([x0, dense.unsqueeze(2) * self.dense_weight], dim=1)
        el = x0
        for layer in self.layers:
            el = layer(el, x0)
        return self.head(el.flatten(1)).squeeze(1)
