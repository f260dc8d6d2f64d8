"""The project's earlier DLF reading (model ``dlf_branch_softmax``): blocks and fusion by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.models.dlf_branch_softmax import (
    BranchSoftmaxDLF as DLF,
    BranchSoftmaxDLFConfig as DLFConfig,
    DLFLayer,
    HighRankBlock,
    ImplicitBlock,
    LowRankBlock,
    NetworkAwareAttentionFusion,
)

B, D_EMB, F = 16, 8, 5


def _layer_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the last axis at init (weight 1, bias 0), written out."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


# ---------------------------------------------------------------- DLF blocks


def _tokens(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_low_rank_block() -> None:
    """A = relu(W_LO LN(vec(E1 El^T W_LI)) + b), written out with the block's weights."""
    torch.manual_seed(4)
    f1, fl, rank, n_out = 5, 7, 3, 4
    block = LowRankBlock(f1, fl, D_EMB, n_out, rank, (), 0.0).eval()
    e1, el = _tokens(B, f1, D_EMB, seed=1), _tokens(B, fl, D_EMB, seed=2)
    linear = block.out.proj.net[0]
    with torch.no_grad():
        inter = torch.einsum("bfd,bgd,gr->bfr", e1, el, block.w_in)
        expected = torch.relu(_layer_norm(inter.flatten(1)) @ linear.weight.T + linear.bias).view(B, n_out, D_EMB)
        torch.testing.assert_close(block(e1, el), expected, rtol=1e-5, atol=1e-5)


def test_high_rank_block() -> None:
    torch.manual_seed(5)
    fl, rank, n_out = 6, 4, 3
    block = HighRankBlock(fl, D_EMB, n_out, rank, (), 0.0).eval()
    el = _tokens(B, fl, D_EMB, seed=3)
    linear = block.out.proj.net[0]
    with torch.no_grad():
        inter = torch.einsum("bfd,bgd,gr->bfr", el, el, block.w_in)
        expected = torch.relu(_layer_norm(inter.flatten(1)) @ linear.weight.T + linear.bias).view(B, n_out, D_EMB)
        torch.testing.assert_close(block(el), expected, rtol=1e-5, atol=1e-5)


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


