"""D-MoE: de-correlated mixture of heterogeneous CTR experts
("Enhancing CTR Prediction with De-correlated Expert Networks", arXiv 2505.17925).

K experts each map their own field embeddings to a representation
h_k in R^m; a softmax gate mixes them; a linear tower gives the logit:

    g = softmax(W_g2 relu(W_g1 x_g))            x_g = vec(mean_k E_k)   (gate input)
    h = sum_k g_k h_k,    logit = w^T h + b

Experts (``expert_types``), each a complete interaction model of its kind:
"dnn" (MLP over vec(E_k)), "cross" (DCN-V2: cross network beside a DNN),
"fm" (DeepFM-style: FM bi-interaction pooling 0.5((sum_f e_f)^2 - sum_f e_f^2)
beside a DNN); each ends in a linear map to m.

Cross-Expert De-Correlation loss (our reading of the paper's description),
over a batch of n examples, with rho the Pearson correlation across the
batch of dimension t of two experts' representations:

    L_dc = 1/P * sum_{i<j} 1/m * sum_t | rho(h_i[:, t], h_j[:, t]) |,   P = K(K-1)/2

and the training loss is BCE + lambda * L_dc. Dimensions are comparable across
experts because every h_k lives in the one space the shared tower reads.
``decorrelate_on="logit"`` applies the same formula to the experts' scalar
logits w^T h_k + b instead (m = 1). The Cross-Expert Correlation metric is
the same quantity over a whole evaluation set (training/metrics.py,
from accumulated moments, so it is exact over the set, not a batch mean).

The three de-correlation strategies switch independently:
``per_expert_embeddings`` (Multi-Embedding: expert k reads columns
[k*d, (k+1)*d) of one wide table per feature, i.e. its own embedding table),
``heterogeneous`` (expert_types as given vs K copies of ``homogeneous_type``),
and ``decorrelation_weight`` (lambda; 0 turns the loss off).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from training.models.common import MLP, flatten_inputs
from training.models.dcnv2 import CrossNetV2


@dataclass
class DMoEConfig:
    expert_types: tuple[str, ...] = ("dnn", "cross", "fm")
    heterogeneous: bool = True
    homogeneous_type: str = "dnn"
    per_expert_embeddings: bool = True
    decorrelation_weight: float = 0.01
    decorrelate_on: Literal["representation", "logit"] = "representation"
    expert_dim: int = 64
    hidden_units: tuple[int, ...] = (256, 128)
    cross_layers: int = 3
    gate_hidden: int = 64
    dropout: float = 0.1


class DNNExpert(nn.Module):
    def __init__(self, num_fields: int, d: int, num_dense: int, cfg: DMoEConfig) -> None:
        super().__init__()
        self.net = MLP(num_fields * d + num_dense, cfg.hidden_units, cfg.dropout, batch_norm=True, out_dim=cfg.expert_dim)

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return self.net(flatten_inputs(emb, dense))


class CrossExpert(nn.Module):
    """DCN-V2 (parallel): cross network and DNN side by side, then a linear map to m."""

    def __init__(self, num_fields: int, d: int, num_dense: int, cfg: DMoEConfig) -> None:
        super().__init__()
        n = num_fields * d + num_dense
        self.cross = CrossNetV2(n, cfg.cross_layers)
        self.deep = MLP(n, cfg.hidden_units, cfg.dropout, batch_norm=True)
        self.out = nn.Linear(n + self.deep.out_dim, cfg.expert_dim)

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        x0 = flatten_inputs(emb, dense)
        return self.out(torch.cat([self.cross(x0), self.deep(x0)], dim=1))


class FMExpert(nn.Module):
    """Factorization-machine expert: FM bi-interaction pooling beside a DNN (DeepFM-style), then to m."""

    def __init__(self, num_fields: int, d: int, num_dense: int, cfg: DMoEConfig) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(d)
        self.deep = MLP(num_fields * d + num_dense, cfg.hidden_units, cfg.dropout, batch_norm=True)
        self.out = nn.Linear(d + self.deep.out_dim, cfg.expert_dim)

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        bi = 0.5 * (emb.sum(dim=1).pow(2) - emb.pow(2).sum(dim=1))
        return self.out(torch.cat([self.norm(bi), self.deep(flatten_inputs(emb, dense))], dim=1))


EXPERTS: dict[str, type[nn.Module]] = {"dnn": DNNExpert, "cross": CrossExpert, "fm": FMExpert}


def pairwise_abs_correlation(outputs: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean |Pearson rho| over expert pairs and dimensions; outputs [K, n, m] -> scalar."""
    k = outputs.shape[0]
    if k < 2:
        return outputs.new_zeros(())
    centred = outputs - outputs.mean(dim=1, keepdim=True)
    scaled = centred / (centred.pow(2).mean(dim=1, keepdim=True).sqrt() + eps)  # [K, n, m]
    corr = torch.einsum("int,jnt->ijt", scaled, scaled) / outputs.shape[1]  # [K, K, m]
    iu = torch.triu_indices(k, k, offset=1)
    return corr[iu[0], iu[1]].abs().mean()


class DMoE(nn.Module):
    def __init__(self, num_fields: int, embedding_dim: int, num_dense: int, config: DMoEConfig | None = None) -> None:
        super().__init__()
        cfg = config or DMoEConfig()
        types = tuple(cfg.expert_types) if cfg.heterogeneous else (cfg.homogeneous_type,) * len(cfg.expert_types)
        unknown = [t for t in types if t not in EXPERTS]
        if unknown:
            raise ValueError(f"unknown expert types {unknown}; choose from {sorted(EXPERTS)}")
        self.cfg = cfg
        self.num_experts = len(types)
        self.d = embedding_dim
        self.per_expert = cfg.per_expert_embeddings
        self.embedding_dim = embedding_dim * self.num_experts if self.per_expert else embedding_dim
        self.experts = nn.ModuleList(EXPERTS[t](num_fields, embedding_dim, num_dense, cfg) for t in types)
        self.gate = nn.Sequential(
            nn.Linear(num_fields * embedding_dim + num_dense, cfg.gate_hidden), nn.ReLU(), nn.Linear(cfg.gate_hidden, self.num_experts)
        )
        self.tower = nn.Linear(cfg.expert_dim, 1)
        self.last_expert_outputs: torch.Tensor | None = None
        self.last_gate: torch.Tensor | None = None

    def expert_embeddings(self, field_emb: torch.Tensor) -> list[torch.Tensor]:
        if not self.per_expert:
            return [field_emb] * self.num_experts
        return [field_emb[..., k * self.d : (k + 1) * self.d] for k in range(self.num_experts)]

    def forward(self, field_emb: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        embs = self.expert_embeddings(field_emb)
        reps = torch.stack([expert(e, dense) for expert, e in zip(self.experts, embs)], dim=0)  # [K, B, m]
        gate_in = flatten_inputs(torch.stack(embs, dim=0).mean(dim=0), dense)
        gate = torch.softmax(self.gate(gate_in), dim=1)  # [B, K]
        self.last_expert_outputs, self.last_gate = reps, gate
        mixed = torch.einsum("bk,kbm->bm", gate, reps)
        return self.tower(mixed).squeeze(1)

    def decorrelation_targets(self) -> torch.Tensor:
        """What the loss and the metric correlate: [K, B, m] representations or [K, B, 1] logits."""
        if self.last_expert_outputs is None:
            raise RuntimeError("call forward first")
        if self.cfg.decorrelate_on == "logit":
            return self.tower(self.last_expert_outputs)
        return self.last_expert_outputs

    def auxiliary_loss(self) -> torch.Tensor:
        """lambda * L_dc of the last forward pass (added to the BCE by the trainer)."""
        if self.cfg.decorrelation_weight == 0:
            return torch.zeros(())
        return self.cfg.decorrelation_weight * pairwise_abs_correlation(self.decorrelation_targets())
