"""Sparse front ends: TorchRec's EmbeddingBagCollection for training and a
plain-tensor twin for export.

``CTRModel`` = EBC (one table per sparse feature, sum pooling for
single-valued and mean pooling for multi-valued features) -> interaction
head. ``PaddedEmbedding`` holds the same tables as ``nn.Embedding`` and pools
padded ids with gather * mask -> sum (/ count), which ONNX and TensorRT
handle without the Loop/Sequence ops that ``EmbeddingBag`` would emit.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType

from features.spec import FeatureSpec


def table_name(feature: str) -> str:
    return f"t_{feature}"


def table_width(head_dim: int) -> int:
    """FBGEMM's fused kernels need widths divisible by 4: pad, and heads read the first head_dim columns."""
    return -(-head_dim // 4) * 4


def padded_to_kjt(spec: FeatureSpec, ids: torch.Tensor, mask: torch.Tensor) -> KeyedJaggedTensor:
    """Padded [B, S] ids + mask -> KeyedJaggedTensor (keys in spec order)."""
    values, lengths = [], []
    for f, (start, end) in zip(spec.sparse, spec.slot_ranges().values()):
        m = mask[:, start:end] > 0
        values.append(ids[:, start:end][m])
        lengths.append(m.sum(dim=1))
    return KeyedJaggedTensor.from_lengths_sync(
        keys=spec.names,
        values=torch.cat(values),
        lengths=torch.cat(lengths).to(torch.int64),
    )


class CTRModel(nn.Module):
    """EBC -> field embeddings [B, F, d] -> head logits [B]."""

    def __init__(self, spec: FeatureSpec, head: nn.Module, device: torch.device | None = None,
                 init_fn: Callable[[torch.Tensor], Any] | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.names = spec.names
        self.head_dim = head.embedding_dim
        dim = table_width(head.embedding_dim)
        self.ebc = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(
                    name=table_name(f.name),
                    embedding_dim=dim,
                    num_embeddings=f.vocab_size,
                    feature_names=[f.name],
                    pooling=PoolingType.MEAN if f.multi_valued else PoolingType.SUM,
                    init_fn=init_fn,
                )
                for f in spec.sparse
            ],
            device=device,
        )
        self.head = head
        self.last_field_emb: torch.Tensor | None = None
        """The last training forward's field embeddings (the trainer's embedding penalty reads them)."""

    def forward(self, features: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        pooled = self.ebc(features).to_dict()
        field_emb = torch.stack([pooled[n] for n in self.names], dim=1)[..., : self.head_dim]
        self.last_field_emb = field_emb if self.training else None
        return self.head(field_emb, dense)


class PaddedEmbedding(nn.Module):
    """The EBC's tables as ``nn.Embedding``; pools padded ids with a mask."""

    def __init__(self, spec: FeatureSpec, dim: int) -> None:
        super().__init__()
        self.spec = spec
        self.tables = nn.ModuleList(nn.Embedding(f.vocab_size, dim) for f in spec.sparse)
        self.ranges = list(spec.slot_ranges().values())
        self.multi = [f.multi_valued for f in spec.sparse]

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled = []
        for table, (start, end), multi in zip(self.tables, self.ranges, self.multi):
            if multi:
                m = mask[:, start:end].unsqueeze(2)
                summed = (table(ids[:, start:end]) * m).sum(dim=1)
                pooled.append(summed / m.sum(dim=1).clamp(min=1.0))
            else:
                pooled.append(table(ids[:, start]) * mask[:, start : start + 1])
        return torch.stack(pooled, dim=1)

    @classmethod
    def from_state(cls, spec: FeatureSpec, weights: dict[str, torch.Tensor]) -> "PaddedEmbedding":
        """Copy trained tables (``t_<feature>`` -> [vocab, dim]) into nn.Embedding."""
        dim = next(iter(weights.values())).shape[1]
        module = cls(spec, dim)
        with torch.no_grad():
            for f, table in zip(spec.sparse, module.tables):
                table.weight.copy_(weights[table_name(f.name)])
        return module


class InferenceModel(nn.Module):
    """Plain-tensor model for ONNX: (sparse_ids, sparse_mask[, dense]) -> probability [B, 1]."""

    def __init__(self, embedding: PaddedEmbedding, head: nn.Module, num_dense: int) -> None:
        super().__init__()
        self.embedding = embedding
        self.head = head
        self.num_dense = num_dense

    def forward(self, sparse_ids: torch.Tensor, sparse_mask: torch.Tensor, dense: torch.Tensor | None = None) -> torch.Tensor:
        field_emb = self.embedding(sparse_ids, sparse_mask)[..., : self.head.embedding_dim]
        if dense is None:
            dense = field_emb.new_zeros((field_emb.shape[0], 0))
        return torch.sigmoid(self.head(field_emb, dense)).unsqueeze(1)
