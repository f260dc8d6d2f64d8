"""AUC and log loss on NumPy arrays (tie-aware, no sklearn at runtime)."""

from __future__ import annotations

import numpy as np


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties; NaN when one class is absent."""
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(labels.size, dtype=np.float64)
    # average rank inside each run of equal scores
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [labels.size]))
    avg = (starts + ends - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    labels = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), eps, 1 - eps)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


class ExpertCorrelation:
    """Cross-Expert Correlation over a whole evaluation set, from accumulated moments.

    Feed [K, n, m] expert outputs batch by batch; ``value()`` is the mean over
    expert pairs i<j and dimensions t of |Pearson rho(h_i[:, t], h_j[:, t])|
    over all rows seen (exact, not an average of per-batch correlations).
    """

    def __init__(self) -> None:
        self.n = 0
        self.sums: np.ndarray | None = None  # [K, m]
        self.cross: np.ndarray | None = None  # [K, K, m]

    def update(self, outputs: np.ndarray) -> None:
        x = np.asarray(outputs, dtype=np.float64)
        if self.sums is None:
            self.sums = np.zeros((x.shape[0], x.shape[2]))
            self.cross = np.zeros((x.shape[0], x.shape[0], x.shape[2]))
        self.n += x.shape[1]
        self.sums += x.sum(axis=1)
        self.cross += np.einsum("int,jnt->ijt", x, x)

    def moments(self) -> tuple[int, np.ndarray, np.ndarray]:
        if self.sums is None or self.cross is None:
            raise ValueError("no expert outputs were accumulated")
        return self.n, self.sums, self.cross

    def value(self) -> float:
        return correlation_from_moments(*self.moments())


def correlation_from_moments(n: int, sums: np.ndarray, cross: np.ndarray, eps: float = 1e-12) -> float:
    """Mean |rho| over expert pairs and dimensions from n, sum_x [K, m] and sum_xy [K, K, m]."""
    k = sums.shape[0]
    if k < 2 or n < 2:
        return float("nan")
    mean = sums / n
    cov = cross / n - np.einsum("it,jt->ijt", mean, mean)
    std = np.sqrt(np.clip(np.einsum("iit->it", cov), 0, None))
    corr = cov / (np.einsum("it,jt->ijt", std, std) + eps)
    iu = np.triu_indices(k, 1)
    return float(np.abs(corr[iu[0], iu[1]]).mean())
