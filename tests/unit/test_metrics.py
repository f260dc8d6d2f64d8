"""AUC and log loss against scikit-learn's reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from training.metrics import log_loss, roc_auc


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("levels", [3, 20, None])  # few distinct scores (many ties) ... continuous
def test_roc_auc_matches_sklearn_with_ties(seed: int, levels: int | None) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 3000))
    labels = rng.integers(0, 2, n)
    scores = rng.random(n) + 0.3 * labels
    if levels is not None:
        scores = np.round(scores * levels) / levels
        assert len(np.unique(scores)) < n  # there really are ties
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_roc_auc_accepts_float_labels_and_column_vectors() -> None:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 400)
    scores = rng.integers(0, 5, 400).astype(np.float32)
    expected = roc_auc_score(labels, scores)
    assert roc_auc(labels.astype(np.float32).reshape(-1, 1), scores.reshape(-1, 1)) == pytest.approx(expected, abs=1e-12)


def test_roc_auc_edge_values() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1])
    assert roc_auc(labels, labels * 2.0) == 1.0
    assert roc_auc(labels, -labels * 2.0) == 0.0
    assert roc_auc(labels, np.full(6, 0.42)) == 0.5  # all tied
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5


@pytest.mark.parametrize("label", [0, 1])
def test_roc_auc_single_class_is_nan(label: int) -> None:
    assert math.isnan(roc_auc(np.full(10, label), np.linspace(0, 1, 10)))
    assert math.isnan(roc_auc(np.array([], dtype=np.int64), np.array([])))


@pytest.mark.parametrize("seed", range(5))
def test_log_loss_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 3000))
    labels = rng.integers(0, 2, n)
    probs = rng.uniform(1e-4, 1 - 1e-4, n)
    probs[: n // 4] = np.round(probs[: n // 4], 1).clip(0.1, 0.9)  # repeated values
    assert log_loss(labels, probs) == pytest.approx(sk_log_loss(labels, probs), abs=1e-12)
    # float32 inputs, as the trainer passes them
    p32 = probs.astype(np.float32)
    assert log_loss(labels.astype(np.float32), p32) == pytest.approx(sk_log_loss(labels, p32.astype(np.float64)), abs=1e-12)


def test_log_loss_clips_extreme_probabilities() -> None:
    value = log_loss(np.array([1, 0]), np.array([0.0, 1.0]))
    assert math.isfinite(value)
    assert value == pytest.approx(-math.log(1e-7), rel=1e-6)
    assert log_loss(np.array([1, 0]), np.array([1.0, 0.0])) == pytest.approx(-math.log(1 - 1e-7), rel=1e-6)
