"""D-MoE: experts, gate, the de-correlation loss and the Cross-Expert Correlation metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from training.metrics import ExpertCorrelation, correlation_from_moments
from training.models import build_head, make_config
from training.models.dmoe import EXPERTS, DMoE, DMoEConfig, FMExpert, pairwise_abs_correlation

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


def test_fm_expert_computes_bi_interaction_pooling():
    """Call the expert with its DNN path switched off: the output is BN(sum_{i<j} e_i * e_j) written out."""
    torch.manual_seed(0)
    cfg = DMoEConfig(expert_dim=D, hidden_units=(4,), dropout=0.0)
    expert = FMExpert(F, D, 0, cfg).eval()  # BatchNorm at init in eval: x / sqrt(1 + eps)
    with torch.no_grad():
        expert.out.weight.zero_()
        expert.out.weight[:, :D] = torch.eye(D)
        expert.out.bias.zero_()
    emb = torch.randn(4, F, D)
    explicit = sum(emb[:, i] * emb[:, j] for i in range(F) for j in range(i + 1, F))
    torch.testing.assert_close(expert(emb, torch.zeros(4, 0)), explicit / (1 + expert.norm.eps) ** 0.5,
                               rtol=1e-5, atol=1e-5)
    # hand case: two fields (1, 2) and (3, -1) -> (1*3, 2*-1)
    two = FMExpert(2, 2, 0, DMoEConfig(expert_dim=2, hidden_units=(4,), dropout=0.0)).eval()
    with torch.no_grad():
        two.out.weight.zero_()
        two.out.weight[:, :2] = torch.eye(2)
        two.out.bias.zero_()
        two.norm.eps = 0.0
    out = two(torch.tensor([[[1.0, 2.0], [3.0, -1.0]]]), torch.zeros(1, 0))
    torch.testing.assert_close(out, torch.tensor([[3.0, -2.0]]))


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


def test_gated_mixture_by_hand():
    """g = softmax(W2 relu(W1 x_g + b1) + b2), logit = w . sum_k g_k h_k + b, with the gate,
    tower and expert outputs set by hand (experts replaced by constants)."""

    class Constant(nn.Module):
        def __init__(self, value):
            super().__init__()
            self.value = torch.tensor(value)

        def forward(self, emb, dense):
            return self.value.expand(emb.shape[0], -1)

    head = DMoE(2, 1, 0, DMoEConfig(expert_types=("dnn", "dnn"), per_expert_embeddings=False, expert_dim=2,
                                    gate_hidden=1, decorrelation_weight=0.0))
    head.experts = nn.ModuleList([Constant([1.0, 0.0]), Constant([0.0, 2.0])])
    with torch.no_grad():
        head.gate[0].weight.copy_(torch.tensor([[1.0, 1.0]]))
        head.gate[0].bias.zero_()
        head.gate[2].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        head.gate[2].bias.zero_()
        head.tower.weight.copy_(torch.tensor([[1.0, 1.0]]))
        head.tower.bias.fill_(0.5)
    emb = torch.tensor([[[0.5], [0.5]]])  # gate input sum 1 -> relu 1 -> logits (1, -1)
    g1 = np.exp(1) / (np.exp(1) + np.exp(-1))
    expected = 0.5 + g1 * 1.0 + (1 - g1) * 2.0
    assert head(emb, torch.zeros(1, 0)).item() == pytest.approx(expected, rel=1e-6)
    assert head.last_gate[0, 0].item() == pytest.approx(g1, rel=1e-6)


def test_auxiliary_loss_is_the_weighted_correlation_and_trains():
    torch.manual_seed(0)
    head = build_head("dmoe", F, D, 0, make_config("dmoe", {"decorrelation_weight": 0.5, "expert_dim": 4}))
    emb = torch.randn(32, F, head.embedding_dim, requires_grad=True)
    logits = head(emb, torch.zeros(32, 0))
    reps = head.last_expert_outputs.detach().numpy()
    corr = [abs(np.corrcoef(reps[i, :, t], reps[j, :, t])[0, 1]) for i in range(3) for j in range(i + 1, 3) for t in range(4)]
    aux = head.auxiliary_loss()
    assert aux.item() == pytest.approx(0.5 * float(np.mean(corr)), rel=1e-4)
    (logits.sum() + aux).backward()
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)
    off = DMoE(F, D, 0, DMoEConfig(decorrelation_weight=0.0))
    off(torch.randn(4, F, off.embedding_dim), torch.zeros(4, 0))
    assert off.auxiliary_loss().item() == 0.0


def test_logit_decorrelation_target():
    head = DMoE(F, D, 0, DMoEConfig(decorrelate_on="logit"))
    head(torch.randn(8, F, head.embedding_dim), torch.zeros(8, 0))
    assert head.decorrelation_targets().shape == (3, 8, 1)
