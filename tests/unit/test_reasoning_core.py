"""The GRPO objective and the small statistics of the reasoning jobs."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from jobs.reasoning.grpo import GRPOConfig, group_advantages, grpo_loss, kl_k3
from jobs.reasoning.stats import cohen_kappa, mcnemar_exact, proportion, wilson_interval


def test_group_advantages_standardise_within_each_group() -> None:
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])
    adv = group_advantages(r, 4)
    first = (r[:4] - r[:4].mean()) / (r[:4].std() + 1e-4)
    assert torch.allclose(adv[:4], first)
    assert torch.all(adv[4:] == 0)          # a group with equal rewards has no signal
    assert torch.allclose(group_advantages(r, 4, scale=False)[:4], r[:4] - 0.25)
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(torch.ones(6), 4)


def test_kl_k3_is_nonnegative_and_zero_at_equality() -> None:
    a, b = torch.randn(100), torch.randn(100)
    assert torch.all(kl_k3(a, b) >= 0) and torch.allclose(kl_k3(a, a), torch.zeros(100))


def test_grpo_loss_gradient_follows_the_advantage_and_clips() -> None:
    logp = torch.zeros(2, 3, requires_grad=True)
    old = torch.zeros(2, 3)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    loss, _ = grpo_loss(logp, old, None, adv, mask, GRPOConfig(kl_beta=0.0))
    loss.backward()
    # minimising raises the log-prob of the advantaged response, lowers the other; padding gets nothing
    assert torch.all(logp.grad[0, :2] < 0) and logp.grad[0, 2] == 0 and torch.all(logp.grad[1] > 0)
    assert math.isclose(float(logp.grad[0, 0]), -0.5 / 2, rel_tol=1e-6)
    assert math.isclose(float(logp.grad[1, 0]), 0.5 / 3, rel_tol=1e-6)
    # a ratio beyond 1 + ε with positive advantage is clipped: no gradient
    far = torch.full((1, 2), 0.5, requires_grad=True)
    loss, info = grpo_loss(far, torch.zeros(1, 2), None, torch.tensor([1.0]), torch.ones(1, 2), GRPOConfig(kl_beta=0.0))
    loss.backward()
    assert torch.all(far.grad == 0) and info["clip_share"] == 1.0
    # the KL term pulls toward the reference
    pulled = torch.zeros(1, 2, requires_grad=True)
    loss, info = grpo_loss(pulled, torch.zeros(1, 2), torch.full((1, 2), -1.0), torch.tensor([0.0]), torch.ones(1, 2))
    loss.backward()
    assert torch.all(pulled.grad > 0) and info["kl"] > 0


def test_wilson_interval_matches_the_closed_form_and_edges() -> None:
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 0.25 < high < 0.35
    low, high = wilson_interval(50, 100)
    assert math.isclose(low, 0.4038, abs_tol=1e-3) and math.isclose(high, 0.5962, abs_tol=1e-3)
    assert math.isnan(proportion(0, 0)["rate"])
    with pytest.raises(ValueError):
        wilson_interval(5, 3)


def test_mcnemar_counts_only_discordant_pairs() -> None:
    before = [True] * 10 + [False] * 20 + [True] * 5
    after = [True] * 10 + [True] * 18 + [False] * 2 + [False] * 5
    out = mcnemar_exact(before, after)
    assert out["b_right_to_wrong"] == 5 and out["c_wrong_to_right"] == 18
    assert math.isclose(out["p_value"], stats.binomtest(5, 23, 0.5).pvalue, rel_tol=1e-9)
    assert mcnemar_exact([True], [True])["p_value"] == 1.0


def test_cohen_kappa() -> None:
    assert cohen_kappa([True, False, True, False], [True, False, True, False])["kappa"] == 1.0
    out = cohen_kappa([True, True, False, False], [True, False, True, False])
    assert out["agreement"] == 0.5 and out["kappa"] == 0.0
