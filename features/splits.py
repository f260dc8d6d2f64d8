"""Random train/val/test splits that every part of recast reproduces identically.

The protocol of the reference numbers (FuxiCTR on ML-100K) is a random 80/10/10
split with seed 2019: ``numpy.random.default_rng(seed).permutation(n)``, the
first 80% of the permuted positions are train, the next 10% val, the rest test.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

SPLIT_NAMES = ("train", "val", "test")


def split_sizes(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """Rows per split: train and val are rounded, test takes the remainder."""
    if len(fractions) != 3 or any(f < 0 for f in fractions):
        raise ValueError(f"split fractions must be three non-negative numbers, got {tuple(fractions)}")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {tuple(fractions)} (sum {sum(fractions)})")
    n_train = int(round(n * fractions[0]))
    n_val = min(int(round(n * fractions[1])), n - n_train)
    return n_train, n_val, n - n_train - n_val


def random_split(n: int, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Split code per row in original order: 0 = train, 1 = val, 2 = test (int8)."""
    n_train, n_val, _ = split_sizes(n, fractions)
    perm = np.random.default_rng(seed).permutation(n)
    codes = np.full(n, 2, dtype=np.int8)
    codes[perm[:n_train]] = 0
    codes[perm[n_train : n_train + n_val]] = 1
    return codes
