"""MovieLens/Criteo parquet splits as in-memory tensors, batched for training.

The padded (ids, mask) layout comes from features/encoding.py, the same
code the gateway uses; training converts each batch to a
KeyedJaggedTensor for the EmbeddingBagCollection.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl
import torch

from features.encoding import encode_frame
from features.spec import FeatureSpec

SPLITS = ("train", "val", "test")


@dataclass
class CTRData:
    ids: torch.Tensor  # [N, S] int64
    mask: torch.Tensor  # [N, S] float32
    dense: torch.Tensor  # [N, D] float32
    labels: torch.Tensor  # [N] float32

    def __len__(self) -> int:
        return self.labels.shape[0]

    def take(self, index: torch.Tensor) -> "CTRData":
        return CTRData(self.ids[index], self.mask[index], self.dense[index], self.labels[index])


def frame_to_data(spec: FeatureSpec, frame: pl.DataFrame) -> CTRData:
    ids, mask = encode_frame(spec, frame)
    if spec.dense:
        dense = frame.select(spec.dense).fill_null(0.0).to_numpy().astype(np.float32)
    else:
        dense = np.zeros((frame.height, 0), dtype=np.float32)
    labels = frame.get_column(spec.label).to_numpy().astype(np.float32)
    return CTRData(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(dense), torch.from_numpy(labels))


def load_split(features_dir: Path, split: str, spec: FeatureSpec | None = None) -> CTRData:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    spec = spec or FeatureSpec.load(features_dir / "spec.json")
    path = features_dir / f"interactions_{split}.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `recast features build` first")
    return frame_to_data(spec, pl.read_parquet(path))


def batches(
    data: CTRData,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[CTRData, int]]:
    """Yield (this rank's part of a global batch, number of real rows in it).

    Every rank gets the same number of rows per step (TorchRec's table-wise
    all-to-all expects equal local batches): the last batch is padded by
    repeating rows, and the real-row count lets evaluation drop the padding.
    """
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    local = batch_size // world_size
    if local == 0:
        raise ValueError(f"batch size {batch_size} is smaller than the world size {world_size}")
    step = local * world_size
    for start in range(0, n, step):
        index = order[start : start + step]
        if index.numel() < step:
            if drop_last:
                return
            index = torch.cat([index, index.new_zeros(step - index.numel()) + index[-1]]) if index.numel() else index
        real = min(step, n - start)
        mine = index[rank * local : (rank + 1) * local]
        real_mine = max(0, min(local, real - rank * local))
        yield data.take(mine), real_mine
