"""The CTR heads: shapes, gradient flow, and the model equations checked by hand."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from training.models import MODELS, build_head, make_config
from training.models.dcnv2 import CrossNetV2, DCNv2, DCNv2Config
from training.models.deepfm import DeepFM, DeepFMConfig
from training.models.dlf import (
    DLF,
    DLFConfig,
    DLFLayer,
    HighRankBlock,
    ImplicitBlock,
    LowRankBlock,
    NetworkAwareAttentionFusion,
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
    "dlf": {"num_layers": 2, "n_low_rank": 3, "n_high_rank": 4, "n_implicit": 2, "rank": 5,
            "block_hidden_units": [24], "head_hidden_units": [32]},
}
DLF_STRUCTURES = [("dlf", {}), ("dlf", {"fusion": "concat"}), ("dlf", {"gated_residual": False}),
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
    cfg = make_config("dlf", {"head_hidden_units": [64, 32], "block_hidden_units": [16], "rank": 7})
    assert isinstance(cfg, DLFConfig)
    assert cfg.head_hidden_units == (64, 32) and isinstance(cfg.head_hidden_units, tuple)
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


def test_dcnv2_structures_wire_cross_and_dnn() -> None:
    torch.manual_seed(3)
    n = F * D_EMB + 2
    cfg = DCNv2Config(cross_layers=1, hidden_units=(6,), dropout=0.0)
    par = DCNv2(F, D_EMB, 2, cfg).eval()
    assert par.out.in_features == n + 6
    emb, dense = _inputs(par, 2)
    x0 = torch.cat([emb.flatten(1), dense], dim=1)
    with torch.no_grad():
        expected = par.out(torch.cat([par.cross(x0), par.dnn(x0)], dim=1)).squeeze(1)
        torch.testing.assert_close(par(emb, dense), expected)
    stacked = DCNv2(F, D_EMB, 2, DCNv2Config(cross_layers=1, hidden_units=(6,), dropout=0.0, structure="stacked")).eval()
    assert stacked.out.in_features == 6
    with torch.no_grad():
        torch.testing.assert_close(stacked(emb, dense), stacked.out(stacked.dnn(stacked.cross(x0))).squeeze(1))


# ---------------------------------------------------------------- DLF blocks


def _tokens(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("hidden", [(), (10,)])
def test_low_rank_block(hidden: tuple[int, ...]) -> None:
    torch.manual_seed(4)
    f1, fl, rank, n_out = 5, 7, 3, 4
    block = LowRankBlock(f1, fl, D_EMB, n_out, rank, hidden, 0.0).eval()
    e1, el = _tokens(B, f1, D_EMB, seed=1), _tokens(B, fl, D_EMB, seed=2)
    out = block(e1, el)
    assert out.shape == (B, n_out, D_EMB)
    assert (out >= 0).all()
    # A = relu(W_LO vec(LN(E1 El^T W_LI)) + b)
    inter = e1 @ el.transpose(1, 2) @ block.w_in  # [B, f1, R]
    with torch.no_grad():
        expected = torch.relu(block.out.proj(block.out.norm(inter.flatten(1)))).view(B, n_out, D_EMB)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("hidden", [(), (10,)])
def test_high_rank_block(hidden: tuple[int, ...]) -> None:
    torch.manual_seed(5)
    fl, rank, n_out = 6, 4, 3
    block = HighRankBlock(fl, D_EMB, n_out, rank, hidden, 0.0).eval()
    el = _tokens(B, fl, D_EMB, seed=3)
    out = block(el)
    assert out.shape == (B, n_out, D_EMB)
    assert (out >= 0).all()
    inter = el @ el.transpose(1, 2) @ block.w_in  # [B, fl, R]
    with torch.no_grad():
        expected = torch.relu(block.out.proj(block.out.norm(inter.flatten(1)))).view(B, n_out, D_EMB)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_implicit_block() -> None:
    torch.manual_seed(6)
    fl, n_out = 6, 9
    block = ImplicitBlock(fl, D_EMB, n_out)
    el = _tokens(B, fl, D_EMB, seed=4)
    out = block(el)
    assert out.shape == (B, n_out, D_EMB)
    W, b = block.mix.weight, block.mix.bias  # [n_out, fl], [n_out]
    expected = torch.relu(torch.einsum("jf,bfd->bjd", W, el) + b[None, :, None])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_attention_fusion_weights_and_output() -> None:
    torch.manual_seed(7)
    fusion = NetworkAwareAttentionFusion(D_EMB, 3)
    el = _tokens(B, 6, D_EMB, seed=5)
    branches = [_tokens(B, n, D_EMB, seed=10 + n) for n in (2, 3, 4)]
    a = fusion.weights(el, branches)
    assert a.shape == (B, 3)
    assert (a > 0).all()
    torch.testing.assert_close(a.sum(dim=1), torch.ones(B), rtol=0, atol=1e-6)
    # the weights depend on the example (attention, not a constant mix)
    assert (a.max(dim=0).values - a.min(dim=0).values).max() > 1e-3
    # by hand: softmax_k(q . W_k s_k / sqrt(d)), q = W_q mean(E)
    q = el.mean(dim=1) @ fusion.query.weight.T
    keys = torch.stack([br.mean(dim=1) for br in branches], dim=1) @ fusion.key.weight.T
    torch.testing.assert_close(a, torch.softmax((q[:, None, :] * keys).sum(-1) / D_EMB**0.5, dim=1))
    out = fusion(el, branches)
    assert out.shape == (B, 2 + 3 + 4, D_EMB)
    expected = torch.cat([3 * a[:, k, None, None] * br for k, br in enumerate(branches)], dim=1)
    torch.testing.assert_close(out, expected)
    # uniform attention (zero query) is plain concatenation
    with torch.no_grad():
        fusion.query.weight.zero_()
    torch.testing.assert_close(fusion(el, branches), torch.cat(branches, dim=1))


def _layer_cfg(**kw) -> DLFConfig:
    base = dict(n_low_rank=3, n_high_rank=2, n_implicit=4, rank=3, block_hidden_units=(), dropout=0.0)
    return DLFConfig(**(base | kw))


@pytest.mark.parametrize("fl", [5, 9])  # 9 == f_out: identity residual; 5: projected residual
def test_concat_fusion_layer_by_hand(fl: int) -> None:
    torch.manual_seed(8)
    f1 = 5
    layer = DLFLayer(f1, fl, D_EMB, _layer_cfg(fusion="concat")).eval()
    assert layer.f_out == 9
    assert layer.fusion is None and layer.gate is None
    assert (layer.residual_proj is None) == (fl == layer.f_out)
    e1, el = _tokens(B, f1, D_EMB, seed=6), _tokens(B, fl, D_EMB, seed=7)
    with torch.no_grad():
        branches = torch.cat([layer.low(e1, el), layer.high(el), layer.implicit(el)], dim=1)
        if layer.residual_proj is None:
            residual = el
        else:
            P = layer.residual_proj.weight.T  # [fl, f_out]
            residual = torch.einsum("fo,bfd->bod", P, el)
        expected = nn.functional.layer_norm(branches + residual, (D_EMB,), layer.norm.weight, layer.norm.bias, layer.norm.eps)
        out = layer(e1, el)
    assert out.shape == (B, 9, D_EMB)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_gated_residual() -> None:
    torch.manual_seed(9)
    f1 = fl = 6
    gated = DLFLayer(f1, fl, D_EMB, _layer_cfg(gated_residual=True)).eval()
    plain = DLFLayer(f1, fl, D_EMB, _layer_cfg(gated_residual=False)).eval()
    assert gated.gate is not None and plain.gate is None
    missing, unexpected = plain.load_state_dict(gated.state_dict(), strict=False)
    assert not missing and all(k.startswith("gate.") for k in unexpected)
    e1, el = _tokens(B, f1, D_EMB, seed=8), _tokens(B, fl, D_EMB, seed=9)
    with torch.no_grad():
        out_plain = plain(e1, el)
        # a learned gate changes the output
        assert (gated(e1, el) - out_plain).abs().max() > 1e-3
        # gate wide open (sigmoid -> 1) is the ungated layer
        gated.gate.weight.zero_()
        gated.gate.bias.fill_(50.0)
        torch.testing.assert_close(gated(e1, el), out_plain, rtol=1e-5, atol=1e-5)
        # gate shut (sigmoid -> 0) drops the residual: LayerNorm(fused) alone
        gated.gate.bias.fill_(-50.0)
        branches = [gated.low(e1, el), gated.high(el), gated.implicit(el)]
        fused = gated.fusion(el, branches)
        torch.testing.assert_close(gated(e1, el), gated.norm(fused), rtol=1e-5, atol=1e-5)


def test_dlf_dense_token_and_layer_widths() -> None:
    cfg = _layer_cfg(num_layers=3, head_hidden_units=(8,))
    model = DLF(F, D_EMB, 2, cfg)
    f_out = cfg.n_low_rank + cfg.n_high_rank + cfg.n_implicit
    # first layer sees the F fields plus one dense token; later layers see f_out tokens
    assert model.layers[0].low.w_in.shape[0] == F + 1
    assert all(layer.low.w_in.shape[0] == f_out for layer in model.layers[1:])
    assert model.head.net[0].in_features == f_out * D_EMB
    assert DLF(F, D_EMB, 0, cfg).dense_token is None


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
