"""D-MoE: experts, gate, the de-correlation loss and the Cross-Expert Correlation metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.metrics import ExpertCorrelation, correlation_from_moments
from training.models import build_head, make_config
from training.models.dmoe import EXPERTS, DMoE, DMoEConfig, pairwise_abs_correlation

F, D = 5, 8


def _outputs(k: int, n: int, m: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(k, n, m, generator=torch.Generator().manual_seed(seed))


def test_loss_is_one_for_identical_and_affine_copies():
    base = _outputs(1, 256, 4)[0]
    out = torch.stack([base, 3 * base + 1, -2 * base])  # |rho| = 1 for every pair and dimension
    assert pairwise_abs_correlation(out).item() == pytest.approx(1.0, abs=1e-5)


def test_loss_is_near_zero_for_independent_experts():
    out = _outputs(3, 20000, 8)
    assert pairwise_abs_correlation(out).item() < 0.02


def test_loss_matches_numpy_corrcoef():
    out = _outputs(3, 500, 6, seed=3)
    out[1] = 0.6 * out[0] + 0.8 * out[1]  # rho ~ 0.6 between experts 0 and 1
    x = out.numpy()
    expected = np.mean([abs(np.corrcoef(x[i, :, t], x[j, :, t])[0, 1]) for i, j in [(0, 1), (0, 2), (1, 2)] for t in range(6)])
    assert pairwise_abs_correlation(out).item() == pytest.approx(expected, abs=1e-5)


def test_loss_has_gradients_that_reduce_correlation():
    out = _outputs(2, 128, 4).requires_grad_(True)
    with torch.no_grad():
        out[1] = 0.9 * out[0] + 0.1 * out[1]
    before = pairwise_abs_correlation(out)
    before.backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    with torch.no_grad():
        after = pairwise_abs_correlation(out - 0.5 * out.grad)
    assert after < before


def test_metric_from_moments_equals_batch_formula_and_accumulates_exactly():
    out = _outputs(3, 900, 5, seed=7)
    out[2] = 0.5 * out[0] + out[2]
    acc = ExpertCorrelation()
    for chunk in torch.split(out, 128, dim=1):  # uneven batches
        acc.update(chunk.numpy())
    assert acc.value() == pytest.approx(pairwise_abs_correlation(out).item(), abs=1e-6)
    assert np.isnan(correlation_from_moments(1, np.zeros((3, 5)), np.zeros((3, 3, 5))))


@pytest.mark.parametrize("kind", sorted(EXPERTS))
@pytest.mark.parametrize("num_dense", [0, 2])
def test_each_expert_shape_and_gradients(kind, num_dense):
    cfg = DMoEConfig(expert_dim=7, hidden_units=(16, 8))
    expert = EXPERTS[kind](F, D, num_dense, cfg)
    emb = torch.randn(10, F, D, requires_grad=True)
    out = expert(emb, torch.randn(10, num_dense))
    assert out.shape == (10, 7)
    out.sum().backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0


def test_fm_expert_uses_pairwise_interactions():
    """The bi-interaction pooling equals sum_{i<j} e_i * e_j elementwise."""
    emb = torch.randn(4, F, D)
    bi = 0.5 * (emb.sum(1).pow(2) - emb.pow(2).sum(1))
    explicit = sum(emb[:, i] * emb[:, j] for i in range(F) for j in range(i + 1, F))
    assert torch.allclose(bi, explicit, atol=1e-5)


def test_per_expert_embeddings_are_disjoint_slices():
    head = DMoE(F, D, 0, DMoEConfig(per_expert_embeddings=True))
    assert head.embedding_dim == 3 * D
    emb = torch.randn(2, F, 3 * D)
    slices = head.expert_embeddings(emb)
    assert all(torch.equal(s, emb[..., k * D : (k + 1) * D]) for k, s in enumerate(slices))
    shared = DMoE(F, D, 0, DMoEConfig(per_expert_embeddings=False))
    assert shared.embedding_dim == D


def test_switches_homogeneous_vs_heterogeneous():
    het = DMoE(F, D, 0, DMoEConfig(heterogeneous=True))
    hom = DMoE(F, D, 0, DMoEConfig(heterogeneous=False))
    assert [type(e).__name__ for e in het.experts] == ["DNNExpert", "CrossExpert", "FMExpert"]
    assert [type(e).__name__ for e in hom.experts] == ["DNNExpert"] * 3
    with pytest.raises(ValueError, match="unknown expert"):
        DMoE(F, D, 0, DMoEConfig(expert_types=("dnn", "nope")))


def test_gated_mixture_and_auxiliary_loss():
    torch.manual_seed(0)
    head = build_head("dmoe", F, D, 0, make_config("dmoe", {"decorrelation_weight": 0.5, "expert_dim": 4}))
    emb = torch.randn(32, F, head.embedding_dim, requires_grad=True)
    logits = head(emb, torch.zeros(32, 0))
    assert logits.shape == (32,)
    assert torch.allclose(head.last_gate.sum(1), torch.ones(32))
    mixed = torch.einsum("bk,kbm->bm", head.last_gate, head.last_expert_outputs)
    assert torch.allclose(head.tower(mixed).squeeze(1), logits, atol=1e-6)
    aux = head.auxiliary_loss()
    assert aux.item() == pytest.approx(0.5 * pairwise_abs_correlation(head.last_expert_outputs).item(), rel=1e-6)
    (logits.sum() + aux).backward()
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)
    off = DMoE(F, D, 0, DMoEConfig(decorrelation_weight=0.0))
    off(torch.randn(4, F, off.embedding_dim), torch.zeros(4, 0))
    assert off.auxiliary_loss().item() == 0.0


def test_logit_decorrelation_target():
    head = DMoE(F, D, 0, DMoEConfig(decorrelate_on="logit"))
    head(torch.randn(8, F, head.embedding_dim), torch.zeros(8, 0))
    assert head.decorrelation_targets().shape == (3, 8, 1)
