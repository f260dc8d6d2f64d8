"""The contract between feature pipeline, trainer, exporter and gateway.

Every sparse feature is integer-encoded with index 0 reserved for
"unknown / out of vocabulary" (cold-start users, unseen items, rare
categories). A feature has a fixed number of slots in the model input:
1 for single-valued features, ``max_len`` for multi-valued ones (genres).

The exported model takes two tensors, built identically by the trainer's
parity check and by the gateway:

* ``sparse_ids``  int64   [batch, total_slots]  encoded ids, slot ranges per feature
* ``sparse_mask`` float32 [batch, total_slots]  1.0 where a slot holds a value

and, when the spec has dense features, ``dense`` float32 [batch, n_dense].
This module is pure Python so the runtime can use it without PyTorch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

Entity = Literal["user", "item", "context"]


@dataclass(frozen=True)
class SparseFeature:
    name: str
    vocab_size: int
    """Number of ids including the reserved 0 (unknown)."""
    entity: Entity = "context"
    max_len: int = 1
    """Slots in the model input; > 1 marks a multi-valued feature."""

    @property
    def multi_valued(self) -> bool:
        return self.max_len > 1


@dataclass(frozen=True)
class FeatureSpec:
    sparse: tuple[SparseFeature, ...]
    dense: tuple[str, ...] = ()
    label: str = "label"
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def total_slots(self) -> int:
        return sum(f.max_len for f in self.sparse)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.sparse]

    def slot_ranges(self) -> dict[str, tuple[int, int]]:
        """Start (inclusive) and end (exclusive) slot of each sparse feature."""
        out, start = {}, 0
        for f in self.sparse:
            out[f.name] = (start, start + f.max_len)
            start += f.max_len
        return out

    def feature(self, name: str) -> SparseFeature:
        for f in self.sparse:
            if f.name == name:
                return f
        raise KeyError(f"unknown sparse feature {name!r}; known: {self.names}")

    def by_entity(self, entity: Entity) -> list[SparseFeature]:
        return [f for f in self.sparse if f.entity == entity]

    def to_json(self) -> str:
        return json.dumps(
            {
                "sparse": [asdict(f) for f in self.sparse],
                "dense": list(self.dense),
                "label": self.label,
                "meta": self.meta,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> "FeatureSpec":
        raw = json.loads(text)
        return cls(
            sparse=tuple(SparseFeature(**f) for f in raw["sparse"]),
            dense=tuple(raw.get("dense", ())),
            label=raw.get("label", "label"),
            meta=raw.get("meta", {}),
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())

    @classmethod
    def load(cls, path: Path) -> "FeatureSpec":
        if not path.exists():
            raise FileNotFoundError(
                f"feature spec {path} is missing: run `recast features build` first"
            )
        return cls.from_json(path.read_text())
