"""Sharpness-aware minimization: SAM and LightSAM as ``torch.optim`` optimizers.

SAM (Foret et al., 2021) evaluates the gradient at a perturbed point
``w = θ + ρ s/‖s‖`` (``s`` the minibatch gradient at ``θ``) and descends from ``θ`` with it,
``θ ← θ - η g(w)``. Its behaviour depends on the radius ρ and the learning rate η, and its
convergence proofs need both below problem-dependent constants.

LightSAM (Cheng, Shen, Sun, Yin, Cao, Chen: "LightSAM: Parameter-Agnostic Sharpness-Aware
Minimization", arXiv 2505.24399) replaces both fixed scales by adaptive ones, so that it
converges for any initial ρ, η > 0. The AdaGrad-Norm form, as the paper states it::

    s_t = ∇f(θ_t, ξ_t);   u_t = u_{t-1} + ‖s_t‖²;   w_t = θ_t + ρ s_t / √u_t
    g_t = ∇f(w_t, ξ_t);   v_t = v_{t-1} + ‖g_t‖²;   θ_{t+1} = θ_t - η g_t / √v_t
    u_0 = v_0 = ε²

The AdaGrad form keeps ``u, v`` per coordinate (``u_t = u_{t-1} + s_t²``, element-wise).
The Adam form replaces the sums by exponential moving averages; our reading (no official code
was available to check against): the ascent scales ``s_t`` by its own bias-corrected second
moment ``a_t = β₂ a_{t-1} + (1-β₂) s_t²``, ``w_t = θ_t + ρ s_t / (√â_t + ε)``, and the descent
is Adam's update with ``g_t`` (first moment β₁, second moment β₂). ρ and η are "initial" scales:
the accumulators make the effective radius and step shrink where gradients are large.

Usage: compute the loss and ``backward()`` as usual, then ``optimizer.step(closure)`` where
``closure`` zeroes the gradients, recomputes the loss on the same minibatch, calls
``backward()`` and returns the loss; the optimizer calls it at the perturbed point. The scalar
accumulators of the -Norm form and SAM's ‖s‖ are taken per parameter group (one group is the
paper's single parameter vector).
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor


class _SharpnessAware(torch.optim.Optimizer):
    """Two gradient evaluations per step: ascend to w, evaluate there, come back, descend."""

    needs_closure = True
    """Training loops pass ``step`` a closure for optimizers that set this."""

    def __init__(self, params: Iterable, defaults: dict) -> None:
        if defaults["lr"] <= 0 or defaults["rho"] < 0:
            raise ValueError(f"need lr > 0 and rho >= 0, got lr={defaults['lr']}, rho={defaults['rho']}")
        super().__init__(params, defaults)

    def _grads(self, group: dict) -> list[tuple[Tensor, Tensor]]:
        out = []
        for p in group["params"]:
            if p.grad is None:
                continue
            g = p.grad
            if group.get("weight_decay"):
                g = g.add(p, alpha=group["weight_decay"])
            out.append((p, g))
        return out

    def _ascent(self, group: dict, pairs: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
        raise NotImplementedError

    def _descent(self, group: dict, pairs: list[tuple[Tensor, Tensor]]) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        if closure is None:
            raise ValueError(f"{type(self).__name__}.step needs a closure that recomputes the loss and its gradients")
        if all(p.grad is None for g in self.param_groups for p in g["params"]):
            with torch.enable_grad():
                closure()
        perturbations = []
        for group in self.param_groups:
            pairs = self._grads(group)
            eps = self._ascent(group, pairs) if pairs else []
            for (p, _), e in zip(pairs, eps):
                p.add_(e)
            perturbations.append([(p, e) for (p, _), e in zip(pairs, eps)])
        with torch.enable_grad():
            loss = closure()
        for group, moved in zip(self.param_groups, perturbations):
            for p, e in moved:
                p.sub_(e)
            pairs = self._grads(group)
            if pairs:
                self._descent(group, pairs)
        return loss

    def _scalar_state(self, group: dict, name: str, init: float) -> Tensor:
        state = self.state[group["params"][0]]
        if name not in state:
            state[name] = torch.tensor(init, dtype=torch.float64)
        return state[name]


def _norm_sq(tensors: list[Tensor]) -> Tensor:
    return torch.stack([t.double().pow(2).sum() for t in tensors]).sum()


class SAM(_SharpnessAware):
    """SAM with SGD (optionally heavy-ball momentum) as the base optimizer, as in Foret et al."""

    def __init__(self, params: Iterable, lr: float = 0.1, rho: float = 0.05, momentum: float = 0.0,
                 weight_decay: float = 0.0, eps: float = 1e-12) -> None:
        super().__init__(params, dict(lr=lr, rho=rho, momentum=momentum, weight_decay=weight_decay, eps=eps))

    def _ascent(self, group: dict, pairs: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
        scale = group["rho"] / (_norm_sq([g for _, g in pairs]).sqrt() + group["eps"])
        return [g * scale.to(g.dtype) for _, g in pairs]

    def _descent(self, group: dict, pairs: list[tuple[Tensor, Tensor]]) -> None:
        for p, g in pairs:
            if group["momentum"]:
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(g)
                g = buf
            p.add_(g, alpha=-group["lr"])


class LightSAMAdaGradNorm(_SharpnessAware):
    """LightSAM with scalar AdaGrad-Norm step sizes for both the ascent and the descent."""

    def __init__(self, params: Iterable, lr: float = 1.0, rho: float = 0.05, eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay))

    def _ascent(self, group: dict, pairs: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
        u = self._scalar_state(group, "u", group["eps"] ** 2)
        u.add_(_norm_sq([g for _, g in pairs]))
        scale = group["rho"] / u.sqrt()
        return [g * scale.to(g.dtype) for _, g in pairs]

    def _descent(self, group: dict, pairs: list[tuple[Tensor, Tensor]]) -> None:
        v = self._scalar_state(group, "v", group["eps"] ** 2)
        v.add_(_norm_sq([g for _, g in pairs]))
        scale = group["lr"] / v.sqrt()
        for p, g in pairs:
            p.add_(g * scale.to(g.dtype), alpha=-1.0)


class LightSAMAdaGrad(_SharpnessAware):
    """LightSAM with coordinate-wise AdaGrad step sizes for both the ascent and the descent."""

    def __init__(self, params: Iterable, lr: float = 0.1, rho: float = 0.05, eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay))

    def _accumulator(self, p: Tensor, name: str, eps: float) -> Tensor:
        state = self.state[p]
        if name not in state:
            state[name] = torch.full_like(p, eps**2)
        return state[name]

    def _ascent(self, group: dict, pairs: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
        out = []
        for p, g in pairs:
            u = self._accumulator(p, "u", group["eps"])
            u.addcmul_(g, g)
            out.append(group["rho"] * g / u.sqrt())
        return out

    def _descent(self, group: dict, pairs: list[tuple[Tensor, Tensor]]) -> None:
        for p, g in pairs:
            v = self._accumulator(p, "v", group["eps"])
            v.addcmul_(g, g)
            p.addcdiv_(g, v.sqrt(), value=-group["lr"])


class LightSAMAdam(_SharpnessAware):
    """LightSAM with Adam-style moving averages for the ascent's and the descent's step sizes."""

    def __init__(self, params: Iterable, lr: float = 1e-3, rho: float = 0.05, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, rho=rho, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _ascent(self, group: dict, pairs: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
        beta2 = group["betas"][1]
        out = []
        for p, g in pairs:
            state = self.state[p]
            if "step" not in state:
                state.update(step=0, a=torch.zeros_like(p), m=torch.zeros_like(p), v=torch.zeros_like(p))
            state["step"] += 1
            state["a"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
            a_hat = state["a"] / (1 - beta2 ** state["step"])
            out.append(group["rho"] * g / (a_hat.sqrt() + group["eps"]))
        return out

    def _descent(self, group: dict, pairs: list[tuple[Tensor, Tensor]]) -> None:
        beta1, beta2 = group["betas"]
        for p, g in pairs:
            state = self.state[p]
            t = state["step"]
            state["m"].mul_(beta1).add_(g, alpha=1 - beta1)
            state["v"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
            m_hat = state["m"] / (1 - beta1**t)
            v_hat = state["v"] / (1 - beta2**t)
            p.addcdiv_(m_hat, v_hat.sqrt().add_(group["eps"]), value=-group["lr"])
