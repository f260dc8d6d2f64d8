"""PIR blocks: identification, local revision, global revision, combination, loss, frozen backbone, ONNX parity."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from training.forecasting.pir import PIR, PIRConfig

torch.set_num_threads(1)
B, L, H, C, K = 4, 32, 8, 3, 5


def cfg(**kw) -> PIRConfig:
    return PIRConfig(seq_len=L, pred_len=H, n_channels=C, top_k=K, d_model=16, n_heads=2, d_ff=32, ue_hidden=16,
                     dropout=0.0, **kw)


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, C, generator=g)
    base = torch.randn(B, H, C, generator=g)
    marks = torch.rand(B, L + H, 4, generator=g) - 0.5
    sims = torch.rand(B, C, K, generator=g)
    targets = torch.randn(B, C, K, H, generator=g)
    mask = torch.ones(B, C, K)
    return x, base, marks, sims, targets, mask


def test_identification_is_nonnegative_per_channel_and_learns() -> None:
    torch.manual_seed(0)
    pir = PIR(cfg())
    x, base, *_ = inputs()
    d = pir.estimate(x, base)
    assert d.shape == (B, C) and (d >= 0).all()
    # a learnable target: the realised error grows with the window's scale
    xs = torch.randn(256, L, C) * torch.linspace(0.2, 3, 256).view(-1, 1, 1)
    bs = torch.zeros(256, H, C)
    target = xs.var(dim=1)
    opt = torch.optim.Adam(list(pir.identification.parameters()) + [pir.channel_embedding], lr=1e-2)
    first = None
    for _ in range(150):
        opt.zero_grad()
        loss = torch.nn.functional.l1_loss(pir.estimate(xs, bs), target)
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * first


def test_channel_embedding_changes_the_estimate() -> None:
    torch.manual_seed(0)
    pir = PIR(cfg())
    x = torch.randn(1, L, 1).repeat(1, 1, C)  # identical channels
    base = torch.randn(1, H, 1).repeat(1, 1, C)
    with torch.no_grad():
        pir.channel_embedding.normal_(0, 1)
    d = pir.estimate(x, base)[0]
    assert len(set(np.round(d.detach().numpy(), 6))) == C


def test_pir_starts_at_the_backbone_without_neighbours() -> None:
    pir = PIR(cfg()).eval()
    x, base, marks, sims, targets, mask = inputs()
    revised, delta = pir(x, base, marks, sims, targets, torch.zeros_like(mask))
    assert torch.allclose(revised, base, atol=1e-6)  # y_local = 0 at init, β = 0 with no valid neighbour
    assert delta.shape == (B, C)


def test_local_revision_attends_across_channels_and_exogenous() -> None:
    torch.manual_seed(0)
    pir = PIR(cfg(use_global=False)).eval()
    with torch.no_grad():
        pir.local.head.weight.normal_(0, 0.5)
    x, base, marks, sims, targets, mask = inputs()
    r1, _ = pir(x, base, marks, sims, targets, mask)
    base2 = base.clone()
    base2[:, :, 2] += 1.0
    r2, _ = pir(x, base2, marks, sims, targets, mask)
    assert not torch.allclose(r1[:, :, 0] - base[:, :, 0], r2[:, :, 0] - base2[:, :, 0])  # channel 0 saw channel 2
    r3, _ = pir(x, base, marks + 0.3, sims, targets, mask)
    assert not torch.allclose(r1, r3)  # calendar tokens matter


def test_global_revision_softmax_and_mask() -> None:
    pir = PIR(cfg(use_local=False)).eval()
    g = pir.global_
    sims = torch.tensor([[[0.9, 0.5, 0.1, 0.0, 0.0]]])
    targets = torch.arange(5.0).view(1, 1, 5, 1).repeat(1, 1, 1, H)
    mask = torch.tensor([[[1.0, 1.0, 0.0, 0.0, 0.0]]])
    out = g(sims, targets, mask)[0, 0, 0]
    tau = float(torch.exp(g.log_tau))
    w = torch.softmax(torch.tensor([0.9, 0.5]) / tau, 0)
    assert torch.isclose(out, w[1] * 1.0, atol=1e-5)  # masked targets 2..4 get no weight
    one = torch.tensor([[[0.0, 0.0, 0.0, 1.0, 0.0]]])
    assert torch.allclose(g(sims, targets, one)[0, 0], torch.full((H,), 3.0))


def test_global_revision_denormalises_with_the_query_statistics() -> None:
    pir = PIR(cfg(use_local=False)).eval()
    x, base, marks, sims, targets, mask = inputs()
    mask = torch.zeros_like(mask)
    mask[:, :, 0] = 1
    with torch.no_grad():
        pir.beta[-1].bias.fill_(50.0)  # β -> 1: revised = retrieval forecast
        pir.beta[-1].weight.zero_()
    revised, _ = pir(x, base, marks, sims, targets, mask)
    xt = x.transpose(1, 2)
    mean = xt.mean(-1, keepdim=True)
    std = torch.sqrt(xt.var(-1, keepdim=True, unbiased=False) + 1e-5)
    expected = (targets[:, :, 0] * std + mean).transpose(1, 2)
    assert torch.allclose(revised, expected, atol=1e-4)


def _local_only(gates: str = "paper") -> PIR:
    torch.manual_seed(0)
    pir = PIR(cfg(use_global=False, gates=gates)).eval()
    with torch.no_grad():
        pir.local.head.weight.normal_(0, 0.5)
    return pir


@pytest.mark.parametrize("gates", ["paper", "per_step"])
def test_alpha_scales_the_local_correction_through_forward(gates: str) -> None:
    """ŷ - ȳ = α·y_local: doubling σ⁻¹(α) changes the correction by exactly the ratio of the α values."""
    pir = _local_only(gates)
    x, base, marks, sims, targets, mask = inputs()
    corrections, alphas = [], []
    for a in (0.2, 0.6):
        with torch.no_grad():
            pir.alpha_w.fill_(-50.0 if gates == "per_step" else 0.0)  # slope 0 (per_step: softplus(-50))
            pir.alpha_b.fill_(float(torch.logit(torch.tensor(a))))
        revised, _ = pir(x, base, marks, sims, targets, mask)
        corrections.append(revised - base)
        alphas.append(pir.gates(x, base, sims, mask)[0])
    assert torch.allclose(alphas[0], torch.full_like(alphas[0], 0.2), atol=1e-6)
    assert corrections[0].abs().max() > 1e-3
    assert torch.allclose(corrections[1], corrections[0] * 3.0, atol=1e-5)


def test_alpha_grows_with_the_estimated_error_per_step_gates() -> None:
    """``per_step`` keeps α's slope >= 0: a window with a larger δ gets a larger α, whatever the raw weights."""
    pir = _local_only("per_step")
    with torch.no_grad():
        pir.alpha_w.uniform_(-3, 3)
    x, base, marks, sims, targets, mask = inputs()
    alpha, _ = pir.gates(x, base, sims, mask)
    delta = pir.estimate(x, base)
    order = torch.argsort(delta[:, 0])
    a = alpha[order, 0]  # [B, H] sorted by δ of channel 0
    assert (a[1:] >= a[:-1] - 1e-7).all()


def test_beta_mixes_in_the_retrieval_forecast_through_forward() -> None:
    """Global only, all hits the same normalised target t: ŷ = ȳ + β·(t·std + mean - ȳ), β from PIR's gates."""
    torch.manual_seed(0)
    pir = PIR(cfg(use_local=False)).eval()
    x, base, marks, sims, _, mask = inputs()
    t = torch.randn(B, C, 1, H).repeat(1, 1, K, 1)
    revised, _ = pir(x, base, marks, sims, t, mask)
    _, beta = pir.gates(x, base, sims, mask)
    assert ((beta > 0) & (beta < 1)).all() and beta.std() > 0  # σ(MLP(δ, sims)) varies with the window
    xt = x.transpose(1, 2)
    mean, std = xt.mean(-1, keepdim=True), torch.sqrt(xt.var(-1, keepdim=True, unbiased=False) + 1e-5)
    y_ret = t[:, :, 0] * std + mean
    expected = base + (beta * (y_ret - base.transpose(1, 2))).transpose(1, 2)
    assert torch.allclose(revised, expected, atol=1e-5)
    # a channel without a valid neighbour gets β = 0: its revised forecast is the base
    mask0 = mask.clone()
    mask0[:, 1] = 0
    revised0, _ = pir(x, base, marks, sims, t, mask0)
    assert torch.equal(revised0[:, :, 1], base[:, :, 1])


def test_guard_keep_zeroes_both_gates_through_forward() -> None:
    torch.manual_seed(0)
    pir = PIR(cfg()).eval()
    with torch.no_grad():
        pir.local.head.weight.normal_(0, 0.5)
        pir.keep[1, :] = 0
        pir.keep[0, H // 2:] = 0
    x, base, marks, sims, targets, mask = inputs()
    revised, _ = pir(x, base, marks, sims, targets, mask)
    assert torch.equal(revised[:, :, 1], base[:, :, 1])
    assert torch.equal(revised[:, H // 2:, 0], base[:, H // 2:, 0])
    assert (revised[:, : H // 2, 0] - base[:, : H // 2, 0]).abs().min() > 0
    alpha, beta = pir.gates(x, base, sims, mask)
    assert float(alpha[:, 1].abs().max()) == 0.0 and float(beta[:, 1].abs().max()) == 0.0


def test_loss_is_mse_plus_lambda_l1_of_the_estimator() -> None:
    pir = PIR(cfg(lambda_ue=0.5))
    x, base, marks, sims, targets, mask = inputs()
    y = torch.randn(B, H, C)
    revised, delta = pir(x, base, marks, sims, targets, mask)
    total, parts = pir.loss(revised, delta, base, y)
    realised = ((base - y) ** 2).mean(1)
    expected = torch.nn.functional.mse_loss(revised, y) + 0.5 * (delta - realised).abs().mean()
    assert torch.isclose(total, expected)
    assert set(parts) == {"mse", "ue_l1"}


def test_delta_is_detached_from_the_revision_gates() -> None:
    pir = PIR(cfg())
    x, base, marks, sims, targets, mask = inputs()
    revised, _ = pir(x, base, marks, sims, targets, mask)
    revised.sum().backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in pir.identification.parameters())


def test_pipeline_keeps_the_backbone_frozen_and_improves_a_weak_backbone() -> None:
    from training.forecasting.data import generated_series, prepare
    from training.forecasting.pipeline import fit_pipeline
    from training.forecasting.train import FitConfig

    prep = prepare(generated_series(n=900, channels=2, seed=1), 48, 12)
    run = fit_pipeline(prep, "dlinear", FitConfig(epochs=1, batch_size=64, lr=1e-3),
                       pir_config={"d_model": 16, "n_heads": 2, "d_ff": 32, "top_k": 10},
                       pir_fit=FitConfig(epochs=3, batch_size=32, lr=2e-3, lr_halving=False))
    assert all(not p.requires_grad for p in run.backbone.parameters())
    t = run.test
    assert t["pir"]["mse"] < t["base"]["mse"]
    assert np.isfinite(t["delta"]["r2"])


def arrays_with_hits(x: np.ndarray, base: np.ndarray, marks: np.ndarray, n_pairs: int = 12, seed: int = 1):
    """PIRArrays over a real store of random pairs (some queries with fewer than K valid hits)."""
    from forecasting.store import RetrievalStore
    from training.forecasting.train import PIRArrays

    rng = np.random.default_rng(seed)
    store = RetrievalStore(C, L, H, 64)
    store.add(rng.normal(size=(n_pairs, L, C)), rng.normal(size=(n_pairs, H, C)), np.arange(n_pairs))
    not_after = np.array([n_pairs] * (len(x) - 1) + [2])  # the last query only sees 3 pairs (< K)
    sims, index = store.search(x, K, not_after=not_after)
    return PIRArrays(x, np.zeros_like(base), marks, base, sims, index, store)


def test_onnx_export_parity(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from training.forecasting.export import export_pir, pir_parity

    torch.manual_seed(0)
    pir = PIR(cfg()).eval()
    with torch.no_grad():
        pir.local.head.weight.normal_(0, 0.2)
        pir.keep[0, : H // 2] = 0  # the guard's mask is part of the graph
    x, base, marks, *_ = (t.numpy() for t in inputs())
    arr = arrays_with_hits(x, base, marks)
    assert arr.arrays(slice(None))[5][-1].sum() == 3 * C
    path = export_pir(pir, tmp_path / "pir.onnx")
    diff, delta = pir_parity(pir, path, arr)
    assert diff <= 1e-5 and delta.shape == (B, C)


def test_paper_softmax_temperature_is_a_switch() -> None:
    pir = PIR(cfg(use_local=False, retrieval_temperature=1.0))
    assert float(pir.global_.log_tau) == 0.0 and not pir.global_.log_tau.requires_grad
    sims = torch.tensor([[[0.9, 0.5, 0.1, 0.0, 0.0]]])
    targets = torch.arange(5.0).view(1, 1, 5, 1).repeat(1, 1, 1, H)
    out = pir.global_(sims, targets, torch.ones(1, 1, 5))[0, 0, 0]
    assert torch.isclose(out, (torch.softmax(sims[0, 0], 0) * torch.arange(5.0)).sum(), atol=1e-5)
