"""The CTR heads: shapes, gradient flow, and the model equations checked by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from training.models import MODELS, build_head, make_config
from training.models.dcnv2 import CrossNetV2, DCNv2, DCNv2Config
from training.models.deepfm import DeepFM, DeepFMConfig
from training.models.dlf import (
    DLF,
    AttentionBlock,
    DLFConfig,
    DLFLayer,
    FactorizationBlock,
    GatedAttentionLayer,
    TokenProjection,
    official_mlp,
)
from training.models.lr import LRConfig

B, F, D_EMB = 16, 5, 8

# small but structurally complete configurations (hidden layers, BN, dropout, several DLF layers)
SMALL = {
    "lr": {},
    "deepfm": {"hidden_units": [32, 16], "dropout": 0.1, "batch_norm": True},
    "dcnv2": {"cross_layers": 2, "hidden_units": [32, 16], "dropout": 0.1, "batch_norm": True},
    "dmoe": {"expert_dim": 6, "hidden_units": [16, 8], "cross_layers": 2, "gate_hidden": 8},
    "finalmlp": {"mlp1_hidden_units": [32, 16], "mlp2_hidden_units": [24], "gate_hidden": 8, "num_heads": 2},
    "dlf": {"num_layers": 2, "n_compress": 3, "n_fm": 4, "n_attention": 2, "rank": 5, "block_hidden": 24,
            "head_hidden": 32, "dropout": 0.1},
    "dlf_branch_softmax": {"num_layers": 2, "n_low_rank": 3, "n_high_rank": 4, "n_implicit": 2, "rank": 5,
                           "block_hidden_units": [24], "head_hidden_units": [32]},
}
DLF_STRUCTURES = [("dlf", {"variant": v}) for v in ("dlf", "att_cross", "att_self", "att_self_gate")] + [
    ("dlf", {"variant": "att_self", "att_self_own_tokens": True}),
    ("dlf_branch_softmax", {"fusion": "concat"}), ("dlf_branch_softmax", {"gated_residual": False}),
    ("dcnv2", {"structure": "stacked"}), ("dcnv2", {"structure": "parallel"})]


def _inputs(head: nn.Module, num_dense: int, batch: int = B, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(batch, F, head.embedding_dim, generator=g)
    dense = torch.randn(batch, num_dense, generator=g)
    return emb, dense


def test_every_model_is_covered() -> None:
    assert set(SMALL) == set(MODELS)


@pytest.mark.parametrize("num_dense", [0, 3])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_head_shape_finite_and_gradients_reach_every_parameter(name: str, num_dense: int) -> None:
    torch.manual_seed(0)
    head = build_head(name, F, D_EMB, num_dense, make_config(name, SMALL[name]))
    head.train()
    emb, dense = _inputs(head, num_dense)
    emb.requires_grad_(True)
    dense.requires_grad_(True)
    logits = head(emb, dense)
    assert logits.shape == (B,)
    assert torch.isfinite(logits).all()
    target = (torch.arange(B) % 2).float()
    loss = nn.functional.binary_cross_entropy_with_logits(logits, target)
    loss.backward()
    params = list(head.named_parameters())
    assert params, "a head without parameters"
    for pname, p in params:
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    if num_dense:
        assert dense.grad is not None and dense.grad.abs().sum() > 0
    # eval mode (BatchNorm running stats, no dropout) also works and is deterministic
    head.eval()
    with torch.no_grad():
        a, b = head(emb, dense), head(emb, dense)
    assert a.shape == (B,) and torch.equal(a, b)


@pytest.mark.parametrize("name,overrides", DLF_STRUCTURES)
def test_structural_variants_run(name: str, overrides: dict) -> None:
    head = build_head(name, F, D_EMB, 2, make_config(name, SMALL[name] | overrides))
    emb, dense = _inputs(head, 2)
    out = head(emb, dense)
    assert out.shape == (B,) and torch.isfinite(out).all()


def test_default_configs_build() -> None:
    for name in MODELS:
        head = build_head(name, F, D_EMB, 2)
        emb, dense = _inputs(head, 2, batch=4)
        assert head(emb, dense).shape == (4,)


def test_logistic_regression_by_hand() -> None:
    head = build_head("lr", 2, D_EMB, 1)
    with torch.no_grad():
        head.bias.fill_(0.25)
        head.dense.weight.fill_(2.0)
    # field weights 0.5 and 1.0 (1-wide embeddings), dense 0.1: 0.5 + 1.0 + 0.2 + 0.25
    out = head(torch.tensor([[[0.5], [1.0]]]), torch.tensor([[0.1]]))
    assert out.item() == pytest.approx(1.95)


def test_embedding_dim_per_head() -> None:
    assert build_head("lr", F, D_EMB, 0).embedding_dim == 1
    assert build_head("deepfm", F, D_EMB, 0).embedding_dim == D_EMB + 1  # first-order weight column
    assert build_head("dcnv2", F, D_EMB, 0).embedding_dim == D_EMB
    assert build_head("dlf", F, D_EMB, 0).embedding_dim == D_EMB


# ---------------------------------------------------------------- configs


def test_make_config_rejects_unknown_hyperparameters() -> None:
    with pytest.raises(ValueError, match="hidden_unitz"):
        make_config("deepfm", {"hidden_unitz": [8]})
    with pytest.raises(ValueError, match="anything"):
        make_config("lr", {"anything": 1})
    with pytest.raises(KeyError, match="nosuchmodel"):
        make_config("nosuchmodel")
    with pytest.raises(KeyError, match="nosuchmodel"):
        build_head("nosuchmodel", F, D_EMB, 0)


def test_make_config_lists_become_tuples() -> None:
    cfg = make_config("dlf_branch_softmax", {"head_hidden_units": [64, 32], "block_hidden_units": [16], "rank": 7})
    assert cfg.head_hidden_units == (64, 32) and isinstance(cfg.head_hidden_units, tuple)
    assert isinstance(make_config("dlf", {"variant": "att_cross"}), DLFConfig)
    assert cfg.block_hidden_units == (16,) and isinstance(cfg.block_hidden_units, tuple)
    assert cfg.rank == 7 and cfg.num_layers == DLFConfig().num_layers
    cfg2 = make_config("dcnv2", {"hidden_units": [5]})
    assert cfg2.hidden_units == (5,) and isinstance(cfg2.hidden_units, tuple)
    assert make_config("lr") == LRConfig()
    assert make_config("deepfm", None) == DeepFMConfig()
    # the config is honoured by the head
    head = build_head("dcnv2", F, D_EMB, 0, make_config("dcnv2", {"cross_layers": 4, "hidden_units": [7]}))
    assert len(head.cross.layers) == 4
    assert [m.out_features for m in head.dnn.net if isinstance(m, nn.Linear)] == [7]


# ---------------------------------------------------------------- DeepFM


@pytest.mark.parametrize("num_dense", [0, 2])
def test_deepfm_equals_linear_plus_explicit_pairwise_sum(num_dense: int) -> None:
    torch.manual_seed(1)
    head = DeepFM(F, D_EMB, num_dense, DeepFMConfig(hidden_units=(16,), dropout=0.0)).double().eval()
    with torch.no_grad():
        head.bias.fill_(0.3)
        last = head.dnn.net[-1]
        assert isinstance(last, nn.Linear) and last.out_features == 1
        last.weight.zero_()
        last.bias.zero_()
    emb, dense = _inputs(head, num_dense)
    emb, dense = emb.double(), dense.double()
    e, w = emb[..., :D_EMB], emb[..., D_EMB]
    pairwise = sum((e[:, i] * e[:, j]).sum(dim=1) for i, j in itertools.combinations(range(F), 2))
    linear = w.sum(dim=1) + 0.3
    if num_dense:
        linear = linear + dense @ head.dense_linear.weight[0]
    with torch.no_grad():
        out = head(emb, dense)
    torch.testing.assert_close(out, linear + pairwise, rtol=1e-10, atol=1e-10)
    # and the DNN really contributes once its output layer is non-zero
    with torch.no_grad():
        last.bias.fill_(1.5)
        torch.testing.assert_close(head(emb, dense), linear + pairwise + 1.5, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- DCNv2


def test_dcnv2_cross_layer_formula() -> None:
    torch.manual_seed(2)
    n = 12
    cross = CrossNetV2(n, 1).double()
    x0 = torch.randn(B, n, dtype=torch.float64)
    W, b = cross.layers[0].weight, cross.layers[0].bias
    expected = x0 * (x0 @ W.T + b) + x0
    torch.testing.assert_close(cross(x0), expected, rtol=1e-12, atol=1e-12)
    # two layers: x2 = x0 * (W2 x1 + b2) + x1
    cross2 = CrossNetV2(n, 2).double()
    x1 = x0 * cross2.layers[0](x0) + x0
    x2 = x0 * (x1 @ cross2.layers[1].weight.T + cross2.layers[1].bias) + x1
    torch.testing.assert_close(cross2(x0), x2, rtol=1e-12, atol=1e-12)


def test_dcnv2_structures_by_hand() -> None:
    """One cross layer, a 1-unit ReLU DNN and the output layer with weights set by hand, n = 2."""
    cfg = DCNv2Config(cross_layers=1, hidden_units=(1,), dropout=0.0)
    par = DCNv2(1, 2, 0, cfg).eval()
    stacked = DCNv2(1, 2, 0, DCNv2Config(cross_layers=1, hidden_units=(1,), dropout=0.0, structure="stacked")).eval()
    assert par.out.in_features == 2 + 1 and stacked.out.in_features == 1
    with torch.no_grad():
        for m in (par, stacked):
            m.cross.layers[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
            m.cross.layers[0].bias.copy_(torch.tensor([0.0, 1.0]))
            m.dnn.net[0].weight.copy_(torch.tensor([[1.0, -1.0]]))
            m.dnn.net[0].bias.fill_(0.5)
        par.out.weight.copy_(torch.tensor([[1.0, 1.0, 2.0]]))
        par.out.bias.fill_(-1.0)
        stacked.out.weight.fill_(3.0)
        stacked.out.bias.fill_(0.0)
    x0 = torch.tensor([[[3.0, 1.0]]])  # one field of width 2
    # cross: x1 = x0 * (W x0 + b) + x0 = [3*3 + 3, 1*(2+1) + 1] = [12, 4]
    # parallel: dnn(x0) = relu(3 - 1 + 0.5) = 2.5; out = 12 + 4 + 2*2.5 - 1 = 20
    assert par(x0, torch.zeros(1, 0)).item() == pytest.approx(20.0)
    # stacked: dnn(x1) = relu(12 - 4 + 0.5) = 8.5; out = 3 * 8.5 = 25.5
    assert stacked(x0, torch.zeros(1, 0)).item() == pytest.approx(25.5)


# ---------------------------------------------------------------- DLF (official variants)
#
# References below are the published equations written out in NumPy (float64) on tiny
# tensors, with the module's parameters set or read; nothing reuses the module's forward.


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _ln(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(axis=-1, keepdims=True) + eps)


def _ref_projection(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.einsum("bfd,fo->bod", x, w)


def _ref_linear(x: np.ndarray, linear: nn.Linear) -> np.ndarray:
    return x @ _np(linear.weight).T + _np(linear.bias)


def _ref_fm(block: FactorizationBlock, x: np.ndarray, left: np.ndarray | None = None) -> np.ndarray:
    """MLP(LN(vec(left (X^T W)))) with a one-Linear MLP (block_layers=1)."""
    left = x if left is None else left
    inter = np.einsum("bfd,bgd,gr->bfr", left, x, _np(block.weight))
    out = _ref_linear(_ln(inter.reshape(len(x), -1)), block.mlp.net[0])
    return out.reshape(len(x), block.n_out, block.d)


def _ref_attention(block: AttentionBlock, x: np.ndarray) -> np.ndarray:
    b, n, d = x.shape
    h, hd = block.heads, d // block.heads
    q, k, v = (x @ _np(p.weight).T for p in (block.q, block.k, block.v))
    out = np.zeros_like(q)
    for head in range(h):
        s = slice(head * hd, (head + 1) * hd)
        scores = q[..., s] @ k[..., s].transpose(0, 2, 1)
        if block.scale:
            scores = scores / np.sqrt(hd)
        a = np.exp(scores - scores.max(-1, keepdims=True))
        out[..., s] = (a / a.sum(-1, keepdims=True)) @ v[..., s]
    flat = out.transpose(0, 2, 1).reshape(b, -1)  # d-major
    return _ref_linear(_ln(flat), block.mlp.net[0]).reshape(b, d, block.n_out).transpose(0, 2, 1)


def _small_dlf(**kw) -> DLFConfig:
    return DLFConfig(**({"n_compress": 2, "n_fm": 3, "n_attention": 2, "rank": 2, "block_layers": 1,
                         "head_layers": 1, "num_heads": 2, "num_layers": 2} | kw))


def test_dlf_defaults_are_the_official_config() -> None:
    cfg = DLFConfig()
    assert (cfg.variant, cfg.num_layers, cfg.n_compress, cfg.n_fm, cfg.n_attention, cfg.rank) == ("dlf", 3, 16, 16, 16, 24)
    assert (cfg.block_hidden, cfg.block_layers, cfg.head_hidden, cfg.head_layers, cfg.dropout) == (512, 2, 512, 2, 0.0)
    # DLF_MLP: Linear(512) -> BatchNorm -> ReLU -> (Dropout) -> Linear
    block = official_mlp(10, 2, 512, 7, 0.0)
    assert [type(m).__name__ for m in block.net] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]


def test_token_projection_by_hand() -> None:
    proj = TokenProjection(2, 1)
    with torch.no_grad():
        proj.weight.copy_(torch.tensor([[2.0], [-1.0]]))
    x = torch.tensor([[[1.0, 3.0], [4.0, 5.0]]])  # 2 tokens of width 2
    assert torch.equal(proj(x), torch.tensor([[[2 * 1 - 4.0, 2 * 3 - 5.0]]]))


def test_factorization_block_hand_case_and_equation() -> None:
    # n_in = 2 tokens of width 1, rank 1: X = [1, 2], W = [1, 0] -> X^T W = 1, inter = [1, 2]
    # LN([1, 2]) = [-1, 1] * 0.5 / sqrt(0.25 + 1e-5); Linear [[1, 0]] + 0.5
    block = FactorizationBlock(2, 1, 1, rank=1, layers=1, hidden=4, dropout=0.0)
    with torch.no_grad():
        block.weight.copy_(torch.tensor([[1.0], [0.0]]))
        block.mlp.net[0].weight.copy_(torch.tensor([[1.0, 0.0]]))
        block.mlp.net[0].bias.fill_(0.5)
    out = block(torch.tensor([[[1.0], [2.0]]]))
    assert out.item() == pytest.approx(0.5 - 0.5 / np.sqrt(0.25 + 1e-5), abs=1e-6)
    # the equation on random tensors, high order (left = X) and low order (left = x0)
    torch.manual_seed(11)
    block = FactorizationBlock(4, 3, D_EMB, rank=2, layers=1, hidden=4, dropout=0.0).double()
    x, x0 = torch.randn(B, 4, D_EMB, dtype=torch.float64), torch.randn(B, 4, D_EMB, dtype=torch.float64)
    np.testing.assert_allclose(_np(block(x)), _ref_fm(block, _np(x)), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(_np(block(x, left=x0)), _ref_fm(block, _np(x), _np(x0)), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("scale", [False, True])
def test_attention_block_equation(scale: bool) -> None:
    torch.manual_seed(12)
    block = AttentionBlock(5, 3, D_EMB, heads=2, layers=1, hidden=4, dropout=0.0, scale=scale).double()
    x = torch.randn(B, 5, D_EMB, dtype=torch.float64)
    np.testing.assert_allclose(_np(block(x)), _ref_attention(block, _np(x)), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("variant, fl", [("dlf", 5), ("dlf", 7), ("att_cross", 7), ("att_self", 9)])
def test_dlf_layer_equation(variant: str, fl: int) -> None:
    """E' = LN_d(concat(H, L(P0 x0), C[, A]) + P_res E), written out."""
    torch.manual_seed(13)
    f1 = 5
    cfg = _small_dlf(variant=variant)
    n_att = {"dlf": 0, "att_cross": cfg.n_attention, "att_self": f1}[variant]
    layer = DLFLayer(f1, fl, D_EMB, cfg, n_att=n_att, att_in=fl).double().eval()
    assert layer.f_out == 2 + 2 * 3 + n_att
    assert (layer.x0_projection is None) == (fl == f1)
    el, x0 = torch.randn(B, fl, D_EMB, dtype=torch.float64), torch.randn(B, f1, D_EMB, dtype=torch.float64)
    e, z = _np(el), _np(x0)
    z = z if layer.x0_projection is None else _ref_projection(z, _np(layer.x0_projection.weight))
    parts = [_ref_fm(layer.high, e), _ref_fm(layer.low, e, z), _ref_projection(e, _np(layer.compress.weight))]
    if n_att:
        parts.append(_ref_attention(layer.attention, e))
    residual = e if layer.residual is None else _ref_projection(e, _np(layer.residual.weight))
    expected = _ln(np.concatenate(parts, axis=1) + residual)
    np.testing.assert_allclose(_np(layer(el, x0)), expected, rtol=1e-8, atol=1e-8)


def test_gated_attention_layer_equation() -> None:
    """S = softmax(Q T^T) T, m = sum_k g_k mean_k with g = softmax(W_g [means]), E' = LN(S + m + P_res E)."""
    torch.manual_seed(14)
    f1 = fl = 4
    layer = GatedAttentionLayer(fl, D_EMB, _small_dlf(variant="att_self_gate"), n_att=f1).double().eval()
    assert layer.f_out == 2 + 3 + f1
    el = torch.randn(B, fl, D_EMB, dtype=torch.float64)
    e = _np(el)
    branches = [_ref_projection(e, _np(layer.compress.weight)), _ref_fm(layer.high, e), _ref_attention(layer.attention, e)]
    tokens = np.concatenate(branches, axis=1)
    scores = np.einsum("qd,btd->bqt", _np(layer.queries), tokens)
    w = np.exp(scores - scores.max(-1, keepdims=True))
    attended = (w / w.sum(-1, keepdims=True)) @ tokens
    means = [b.mean(axis=1) for b in branches]
    logits = _ref_linear(np.concatenate(means, axis=1), layer.gate)
    g = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    mixed = sum(g[:, k, None] * m for k, m in enumerate(means))
    expected = _ln(attended + mixed[:, None, :] + _ref_projection(e, _np(layer.residual.weight)))
    np.testing.assert_allclose(_np(layer(el, el)), expected, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("variant, per_layer", [("dlf", 2 + 6), ("att_cross", 2 + 6 + 2), ("att_self", 2 + 6 + F + 2),
                                                ("att_self_gate", 2 + 3 + F + 2)])
def test_dlf_variants_token_counts_and_dense_tokens(variant: str, per_layer: int) -> None:
    """Token widths per the official classes; each dense feature is one token v_i * w_i."""
    model = DLF(F, D_EMB, 2, _small_dlf(variant=variant)).eval()
    assert all(layer.f_out == per_layer for layer in model.layers)
    assert model.head.net[0].in_features == per_layer * D_EMB
    with torch.no_grad():
        model.dense_weight.copy_(torch.arange(2 * D_EMB, dtype=torch.float32).view(2, D_EMB))
    seen = []
    hook = model.layers[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    emb, dense = torch.randn(3, F, D_EMB), torch.tensor([[1.0, 2.0], [0.0, 0.0], [-1.0, 0.5]])
    model(emb, dense)
    hook.remove()
    assert torch.equal(seen[0][:, :F], emb)
    assert torch.equal(seen[0][:, F:], dense.unsqueeze(2) * model.dense_weight)


def test_att_self_own_tokens_reads_the_previous_attention_slots() -> None:
    official = DLF(F, D_EMB, 0, _small_dlf(variant="att_self"))
    intent = DLF(F, D_EMB, 0, _small_dlf(variant="att_self", att_self_own_tokens=True))
    assert [layer.att_in for layer in official.layers] == [F, 2 + 6 + F]  # as the official code runs
    assert [layer.att_in for layer in intent.layers] == [F, F]
    seen = []
    intent.layers[1].attention.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    first = []
    intent.layers[0].register_forward_hook(lambda m, args, out: first.append(out))
    intent.eval()(torch.randn(3, F, D_EMB), torch.zeros(3, 0))
    assert torch.equal(seen[0], first[0][:, -F:])



def test_finalmlp_fusion_matches_formula() -> None:
    from training.models.finalmlp import BilinearFusion

    torch.manual_seed(0)
    fusion = BilinearFusion(4, 6, heads=2)
    h1, h2 = torch.randn(3, 4), torch.randn(3, 6)
    expected = fusion.w1(h1)[:, 0] + fusion.w2(h2)[:, 0]
    for h in range(2):
        a, b = h1[:, 2 * h: 2 * h + 2], h2[:, 3 * h: 3 * h + 3]
        expected = expected + torch.einsum("bi,ij,bj->b", a, fusion.w3[h], b)
    assert torch.allclose(fusion(h1, h2), expected, atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        BilinearFusion(5, 6, heads=2)


def test_finalmlp_gate_is_twice_sigmoid() -> None:
    from training.models.finalmlp import FeatureGate

    gate = FeatureGate(4, 3)
    for p in gate.net[-1].parameters():
        nn.init.zeros_(p)
    x = torch.randn(2, 4)
    assert torch.allclose(gate(x), x)  # 2 * sigmoid(0) = 1
