"""SAM and LightSAM optimizers (training/optim/sam.py): the paper's equations on a worked
example, SAM(ρ=0) = SGD, the parameter-agnostic mechanism on a quadratic, state round trips,
and the CTR trainer's optimizer hook (dense parameters; embeddings updated once per batch)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from training.optim import OPTIMIZERS, make_optimizer, needs_closure
from training.optim.sam import SAM, LightSAMAdaGrad, LightSAMAdaGradNorm, LightSAMAdam


def _quadratic_step(opt: torch.optim.Optimizer, w: torch.nn.Parameter, curvature: torch.Tensor) -> float:
    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = 0.5 * (curvature * w * w).sum()
        loss.backward()
        return loss

    loss = closure()
    opt.step(closure) if needs_closure(opt) else opt.step()
    return float(loss.detach())


def test_adagrad_norm_follows_the_paper_equations() -> None:
    # f(θ) = θ²/2 in 1-D: s = θ, w = θ + ρ s/√u, g = w, θ' = θ - η g/√v, u0 = v0 = ε²
    theta, rho, eta, eps = 2.0, 0.5, 0.3, 1e-8
    w = torch.nn.Parameter(torch.tensor([theta], dtype=torch.float64))
    opt = LightSAMAdaGradNorm([w], lr=eta, rho=rho, eps=eps)
    u = v = eps**2
    for _ in range(3):
        s = theta
        u += s * s
        pert = theta + rho * s / math.sqrt(u)
        g = pert
        v += g * g
        theta = theta - eta * g / math.sqrt(v)
        _quadratic_step(opt, w, torch.ones(1, dtype=torch.float64))
        assert w.item() == pytest.approx(theta, rel=1e-12)


def test_adagrad_coordinatewise_differs_from_norm_form() -> None:
    curv = torch.tensor([1.0, 100.0], dtype=torch.float64)
    a = torch.nn.Parameter(torch.tensor([1.0, 1.0], dtype=torch.float64))
    b = torch.nn.Parameter(a.detach().clone())
    oa, ob = LightSAMAdaGrad([a], lr=0.1, rho=0.01), LightSAMAdaGradNorm([b], lr=0.1, rho=0.01)
    _quadratic_step(oa, a, curv)
    _quadratic_step(ob, b, curv)
    # coordinate-wise: both coordinates move by about lr (each normalized by its own gradient)
    assert (1.0 - a.detach()).tolist() == pytest.approx([0.1, 0.1], rel=0.05)
    assert not torch.allclose(a, b)


def test_sam_with_zero_radius_is_sgd() -> None:
    torch.manual_seed(0)
    model_a = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    model_b = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    model_b.load_state_dict(model_a.state_dict())
    x, y = torch.randn(32, 5), torch.randn(32, 1)
    sam, sgd = SAM(model_a.parameters(), lr=0.1, rho=0.0), torch.optim.SGD(model_b.parameters(), lr=0.1)
    for _ in range(5):
        for model, opt in ((model_a, sam), (model_b, sgd)):
            def closure(model=model, opt=opt) -> torch.Tensor:
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(model(x), y)
                loss.backward()
                return loss
            closure()
            opt.step(closure) if needs_closure(opt) else opt.step()
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-7)


@pytest.mark.parametrize("name", ["lightsam-adagradnorm", "lightsam-adagrad"])
def test_lightsam_converges_where_sgd_and_sam_diverge(name: str) -> None:
    """The claim's mechanism: η far above 2/L makes SGD and SAM diverge on a quadratic
    (L = 10); the AdaGrad-type step sizes shrink until the iterates settle."""
    curvature = torch.tensor([10.0, 1.0, 0.1])
    finals = {}
    for opt_name in ("sgd", "sam", name):
        w = torch.nn.Parameter(torch.tensor([1.0, 1.0, 1.0]))
        opt = make_optimizer(opt_name, [w], lr=1.0, rho=1.0)
        losses = [_quadratic_step(opt, w, curvature) for _ in range(300)]
        finals[opt_name] = losses[-1]
    assert not finals["sgd"] < 1e3 and not finals["sam"] < 1e3  # inf/nan count as diverged
    assert finals[name] < 0.05


def test_every_optimizer_round_trips_its_state() -> None:
    for name in OPTIMIZERS:
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(4))
        opt = make_optimizer(name, [w], lr=0.01, rho=0.1)
        for _ in range(3):
            _quadratic_step(opt, w, torch.ones(4))
        clone = torch.nn.Parameter(w.detach().clone())
        opt2 = make_optimizer(name, [clone], lr=0.01, rho=0.1)
        opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # state_dict shares tensors
        _quadratic_step(opt, w, torch.ones(4))
        _quadratic_step(opt2, clone, torch.ones(4))
        assert torch.allclose(w, clone, rtol=0, atol=1e-7), name


def test_bad_arguments_say_what_to_do() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        make_optimizer("lamb", [w], lr=0.1)
    with pytest.raises(ValueError, match="need lr > 0"):
        LightSAMAdam([w], lr=0.0)
    with pytest.raises(ValueError, match="needs a closure"):
        SAM([w]).step()
    assert isinstance(make_optimizer("lightsam", [w], lr=0.1), LightSAMAdaGradNorm)


@pytest.mark.slow
def test_trainer_hook_trains_dense_parameters_and_updates_embeddings_once(synthetic_features: Path, tmp_path: Path) -> None:
    """SAM with ρ = 0 takes SGD's steps: if the second pass touched the fused embedding
    tables, the two runs would differ."""
    from training.trainer import TrainConfig, train

    # no dropout: the second pass would draw other masks (and other random numbers)
    common = dict(model="dcnv2", hparams={"dropout": 0.0}, epochs=1, batch_size=512, lr=0.05, progress=False, max_steps_per_epoch=6)
    sgd = train(TrainConfig(optimizer="sgd", **common), synthetic_features, tmp_path / "sgd", resume=False)
    sam0 = train(TrainConfig(optimizer="sam", rho=0.0, **common), synthetic_features, tmp_path / "sam0", resume=False)
    assert sam0.val_auc == pytest.approx(sgd.val_auc, abs=1e-6)
    light = train(TrainConfig(optimizer="lightsam", rho=0.5, **common | {"lr": 0.5, "epochs": 2, "max_steps_per_epoch": None}),
                  synthetic_features, tmp_path / "light", resume=False)
    assert light.val_auc > 0.6
