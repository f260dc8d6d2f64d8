"""The second gradient evaluation that sharpness-aware optimizers (SAM, LightSAM) need, for the
TorchRec CTR trainer, where they train the dense parameters only.

The embedding tables are updated *inside* backward by TorchRec's fused optimizer. A plain second
forward/backward would therefore (a) update the tables a second time per batch, and (b) see
tables already moved by the first backward. Instead, the second pass reuses the pooled
embeddings of the first pass, detached: the tables get exactly one update per batch, and the
perturbed gradient is taken at (θ_dense + ε, tables of this step), so that SAM with ρ = 0 takes
exactly SGD's steps. BatchNorm running statistics are updated by the first pass only (as in the
reference SAM code); dropout draws fresh masks in the second pass, as there.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torchrec import KeyedTensor


@contextmanager
def batchnorm_stats_frozen(model: torch.nn.Module) -> Iterator[None]:
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


class DenseSharpnessStep:
    """``step(loss_fn)`` after the usual backward: the optimizer's closure-driven step, the
    closure recomputing ``loss_fn()`` with the first pass's pooled embeddings."""

    def __init__(self, model: torch.nn.Module, ebc: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 params: list[torch.nn.Parameter], grad_clip: float) -> None:
        self.model, self.optimizer, self.params, self.grad_clip = model, optimizer, params, grad_clip
        self._pooled: torch.Tensor | None = None
        self._replay = False
        ebc.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, inputs: tuple, output: object) -> KeyedTensor:
        kt = output.wait() if hasattr(output, "wait") else output  # sharded EBCs return an awaitable
        if self._replay:
            assert self._pooled is not None and self._pooled.shape == kt.values().shape
            return KeyedTensor(keys=kt.keys(), length_per_key=kt.length_per_key(), values=self._pooled)
        self._pooled = kt.values().detach()
        return kt

    def step(self, loss_fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        def closure() -> torch.Tensor:
            self._replay = True
            try:
                with batchnorm_stats_frozen(self.model):
                    loss = loss_fn()
            finally:
                self._replay = False
            self.optimizer.zero_grad()
            loss.backward()
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
            return loss

        return self.optimizer.step(closure)
