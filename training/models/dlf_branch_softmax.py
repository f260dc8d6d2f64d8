"""Branch-softmax DLF: this project's earlier reading of DLF, kept as model ``dlf_branch_softmax``.

It is NOT the published model (that is training/models/dlf.py, after the
official code): the fusion below -- one softmax weight per branch from a
query/key over branch means, plus a sigmoid gate on the residual -- exists
in no official class, the branches end in a ReLU, the implicit branch is a
biased token mix, and the low-order term multiplies the raw E^(1) instead of
first projecting x0 to F_l tokens. It stays selectable for comparison.

Each of L layers maps token embeddings E^(l) [B, F_l, d] to E^(l+1)
[B, F_{l+1}, d] with three branches of the Residual-Aware Low-Order
Interaction Network (RLI), fused by the Network-Aware Attention Fusion
(NAF), then a flattened MLP head gives the logit.

Branches (sigma = ReLU, vec = flatten, E^(1) = the field embeddings):

* low-rank (alpha):  A = sigma(W_LO vec(E^(1) (E^(l))^T W_LI) + b_LO)   -> [n_lo, d]
  W_LI in R^{F_l x R} contracts the field axis of E^(l), so E^(1) E^(l)T W_LI
  is [F_1, R]: every layer keeps an explicit interaction with the raw
  first-order fields (the "low-order awareness").
* high-rank (beta):  C = sigma(W_CO vec(E^(l) (E^(l))^T W_CI) + b_CO)   -> [n_co, d]
* implicit (gamma):  D = sigma(W_D^T E^(l) + b_D)                       -> [n_d, d]
  W_D in R^{F_l x n_d} mixes along the field axis (a DNN over tokens).
* gated residual:    r = g * (P^T E^(l)), g = sigmoid(W_g vec(E^(l)) + b_g) in R^{F_{l+1}},
  P in R^{F_l x F_{l+1}} (identity when F_l = F_{l+1}).

Fusion (NAF), our reading of "network-aware attention": each branch k is
summarised by the mean of its tokens s_k; a query from the layer input
q = W_q mean(E^(l)) scores the branches, a = softmax_k(q . W_k s_k / sqrt(d)),
and the branches enter the next layer weighted by K * a_k (so uniform
attention equals plain concatenation):

    E^(l+1) = LayerNorm_d( concat_k(K a_k B_k) + r )

Where the paper is ambiguous we follow these readings:

* W_LO / W_CO are one linear map each (the equations), optionally an MLP
  (``block_hidden_units``; the public reference code uses one 512-unit hidden
  layer with BatchNorm) and a LayerNorm on vec(...) before it, as the code does.
* ``fusion="concat"`` switches to the public code's plain ``DLF`` class:
  no attention, no gate, E^(l+1) = LayerNorm(concat(A, C, D) + P^T E^(l)).
* Dense features, when present, are projected to one extra token of E^(1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from training.models.common import MLP


@dataclass
class BranchSoftmaxDLFConfig:
    num_layers: int = 3
    n_low_rank: int = 16
    n_high_rank: int = 16
    n_implicit: int = 16
    rank: int = 24
    block_hidden_units: tuple[int, ...] = ()
    head_hidden_units: tuple[int, ...] = (512,)
    dropout: float = 0.1
    fusion: Literal["attention", "concat"] = "attention"
    gated_residual: bool = True
    block_activation: Literal["relu", "none"] = "relu"
    """sigma on the branch outputs: ReLU as in the equations, or none as in the public code."""


class _InteractionProjection(nn.Module):
    """sigma(W vec(LN(X)) + b) reshaped into ``n_out`` tokens of width d."""

    def __init__(self, in_dim: int, n_out: int, d: int, hidden: tuple[int, ...], dropout: float, activate: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.proj = MLP(in_dim, hidden, dropout, batch_norm=bool(hidden), out_dim=n_out * d)
        self.n_out, self.d, self.activate = n_out, d, activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.proj(self.norm(x.flatten(1)))
        return (torch.relu(out) if self.activate else out).view(-1, self.n_out, self.d)


class LowRankBlock(nn.Module):
    """alpha: explicit interaction of the raw fields E^(1) with the current tokens."""

    def __init__(self, f1: int, fl: int, d: int, n_out: int, rank: int, hidden: tuple[int, ...], dropout: float, activate: bool = True) -> None:
        super().__init__()
        self.w_in = nn.Parameter(torch.empty(fl, rank))
        nn.init.kaiming_uniform_(self.w_in, a=math.sqrt(5))
        self.out = _InteractionProjection(f1 * rank, n_out, d, hidden, dropout, activate)

    def forward(self, e1: torch.Tensor, el: torch.Tensor) -> torch.Tensor:
        compressed = torch.matmul(el.transpose(1, 2), self.w_in)  # [B, d, R]
        return self.out(torch.bmm(e1, compressed))  # [B, F1, R] -> [B, n_out, d]


class HighRankBlock(nn.Module):
    """beta: interaction of the current tokens with themselves (higher orders)."""

    def __init__(self, fl: int, d: int, n_out: int, rank: int, hidden: tuple[int, ...], dropout: float, activate: bool = True) -> None:
        super().__init__()
        self.w_in = nn.Parameter(torch.empty(fl, rank))
        nn.init.kaiming_uniform_(self.w_in, a=math.sqrt(5))
        self.out = _InteractionProjection(fl * rank, n_out, d, hidden, dropout, activate)

    def forward(self, el: torch.Tensor) -> torch.Tensor:
        compressed = torch.matmul(el.transpose(1, 2), self.w_in)
        return self.out(torch.bmm(el, compressed))


class ImplicitBlock(nn.Module):
    """gamma: sigma(W_D^T E^(l) + b), a dense mix along the field axis."""

    def __init__(self, fl: int, d: int, n_out: int, activate: bool = True) -> None:
        super().__init__()
        self.mix = nn.Linear(fl, n_out)
        self.activate = activate

    def forward(self, el: torch.Tensor) -> torch.Tensor:
        out = self.mix(el.transpose(1, 2)).transpose(1, 2)
        return torch.relu(out) if self.activate else out


class NetworkAwareAttentionFusion(nn.Module):
    """Weights each branch by attention between the layer input and the branch summary."""

    def __init__(self, d: int, num_branches: int) -> None:
        super().__init__()
        self.query = nn.Linear(d, d, bias=False)
        self.key = nn.Linear(d, d, bias=False)
        self.num_branches = num_branches
        self.scale = 1.0 / math.sqrt(d)

    def weights(self, el: torch.Tensor, branches: list[torch.Tensor]) -> torch.Tensor:
        q = self.query(el.mean(dim=1))  # [B, d]
        keys = self.key(torch.stack([b.mean(dim=1) for b in branches], dim=1))  # [B, K, d]
        scores = torch.einsum("bd,bkd->bk", q, keys) * self.scale
        return torch.softmax(scores, dim=1)

    def forward(self, el: torch.Tensor, branches: list[torch.Tensor]) -> torch.Tensor:
        a = self.weights(el, branches) * self.num_branches
        return torch.cat([b * a[:, k, None, None] for k, b in enumerate(branches)], dim=1)


class DLFLayer(nn.Module):
    def __init__(self, f1: int, fl: int, d: int, cfg: BranchSoftmaxDLFConfig) -> None:
        super().__init__()
        self.f_out = cfg.n_low_rank + cfg.n_high_rank + cfg.n_implicit
        act = cfg.block_activation == "relu"
        self.low = LowRankBlock(f1, fl, d, cfg.n_low_rank, cfg.rank, cfg.block_hidden_units, cfg.dropout, act)
        self.high = HighRankBlock(fl, d, cfg.n_high_rank, cfg.rank, cfg.block_hidden_units, cfg.dropout, act)
        self.implicit = ImplicitBlock(fl, d, cfg.n_implicit, act)
        self.residual_proj = nn.Linear(fl, self.f_out, bias=False) if fl != self.f_out else None
        self.attention = cfg.fusion == "attention"
        self.fusion = NetworkAwareAttentionFusion(d, 3) if self.attention else None
        self.gate = nn.Linear(fl * d, self.f_out) if (self.attention and cfg.gated_residual) else None
        self.norm = nn.LayerNorm(d)

    def forward(self, e1: torch.Tensor, el: torch.Tensor) -> torch.Tensor:
        branches = [self.low(e1, el), self.high(el), self.implicit(el)]
        if self.fusion is not None:
            fused = self.fusion(el, branches)
        else:
            fused = torch.cat(branches, dim=1)
        residual = el if self.residual_proj is None else self.residual_proj(el.transpose(1, 2)).transpose(1, 2)
        if self.gate is not None:
            residual = residual * torch.sigmoid(self.gate(el.flatten(1))).unsqueeze(2)
        return self.norm(fused + residual)


class BranchSoftmaxDLF(nn.Module):
    def __init__(self, num_fields: int, embedding_dim: int, num_dense: int, config: BranchSoftmaxDLFConfig | None = None) -> None:
        super().__init__()
        cfg = config or BranchSoftmaxDLFConfig()
        self.embedding_dim = d = embedding_dim
        self.dense_token = nn.Linear(num_dense, d) if num_dense else None
        f1 = num_fields + (1 if num_dense else 0)
        layers, fl = [], f1
        for _ in range(cfg.num_layers):
            layer = DLFLayer(f1, fl, d, cfg)
            layers.append(layer)
            fl = layer.f_out
        self.layers = nn.ModuleList(layers)
        self.head = MLP(fl * d, cfg.head_hidden_units, cfg.dropout, batch_norm=True, out_dim=1)

    def forward(self, field_emb: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        e1 = field_emb
        if self.dense_token is not None:
            e1 = torch.cat([e1, self.dense_token(dense).unsqueeze(1)], dim=1)
        el = e1
        for layer in self.layers:
            el = layer(e1, el)
        return self.head(el.flatten(1)).squeeze(1)
