"""PIR: Post-forecasting Identification and Revision.

"Improving Time Series Forecasting via Instance-aware Post-hoc Revision"
(Liu, Cheng, Zhao, Yang, Liu, Chen; NeurIPS 2025). A model-agnostic layer on
top of a *frozen* backbone forecast ``ȳ`` [B, H, C]:

1. **Identification** ``δ = f_ue(x, ȳ, E)``: per channel, a two-layer fully
   connected network over the input window, the base forecast and a learned
   channel embedding ``E`` estimates the base forecast's error; it is trained
   with an L1 loss against the realised per-channel MSE ``mean_t (ȳ - y)²``.
2. **Local revision**: a Transformer encoder over tokens, one per channel
   (built from that channel's base forecast) plus one per
   exogenous covariate (the calendar features over input + horizon),
   attending across channels, produces a correction ``y_local``.
3. **Global revision**: a store of (input window, target) pairs; windows are
   instance-normalised and ranked by cosine similarity, the top-K targets are
   combined with softmax weights of their similarities into ``y_global``.
4. **Combination** ``ŷ = ȳ + α·y_local + β·y_global`` with ``α = σ(Linear(δ))``
   and ``β = σ(MLP(δ, similarities))``; loss ``MSE(ŷ, y) + λ·L1(δ, realised)``,
   λ = 1; only PIR's parameters are trained.

What follows the paper: the three blocks above, two-layer identification
network with channel embedding, the L1-to-realised-MSE objective, the
Transformer with inter-channel attention over forecast and exogenous tokens,
instance normalisation + cosine similarity + top-K softmax retrieval over
training pairs (K from the paper's grid {10, 20, 50}, tuned on validation by the caller), the combination
formula, σ on α and β, λ = 1, the frozen backbone.

Our reading where the paper leaves room (or where we chose differently on purpose):

* ``y_global`` is a *correction*: the softmax-weighted retrieved targets,
  each normalised by the statistics of its own input window and
  de-normalised with the query's, form a retrieval forecast ``y_ret``, and
  ``y_global = y_ret - ȳ``; with β in (0, 1) the global term interpolates
  between the backbone and the retrieval forecast. The softmax has a
  learned temperature starting at 0.1 (similarities of close neighbours all
  sit near 1, so the paper's plain softmax weighs them almost equally);
  ``retrieval_temperature=1.0`` restores the plain softmax.
* ``y_local`` is a correction too: the token of channel ``c`` embeds its base
  forecast, instance-normalised with the input window's mean/std (plus
  ``E_c``); a zero-initialised linear head maps the encoder output back to
  ``H`` steps, scaled by the channel's input standard deviation. At
  initialisation ``y_local = 0``, so PIR starts from the backbone.
* ``gates="paper"`` (default): α = σ(w·δ + b), β = σ(MLP(δ, sims)), one
  value per channel, β's bias starting at 0 (β = 0.5). ``gates="per_step"``
  (an earlier choice of ours, kept switchable): one gate per horizon step
  (``Linear(1 -> H)``), α's slope kept non-negative (softplus), β's bias at
  -2 (β ≈ 0.12). Either way β is zeroed for a channel with no valid
  neighbour (an empty store online).
* The guard (training/forecasting/guard.py, not in the paper) multiplies the
  correction by a fixed 0/1 mask per channel and horizon step: where the
  revision did not beat the backbone on held-out windows, α = β = 0.
* δ enters α and β detached, so only the L1 term shapes the estimator and δ
  stays a calibrated error estimate (the service publishes it as a warning);
  the estimator sees the window and forecast instance-normalised plus the
  window's mean and log-std, and is warmed up alone for 3 epochs before the
  joint phase (training/forecasting/train.py), which is early-stopped after
  1-2 epochs on ETTh1, too few for the estimator alone.
* Covariates: every variate of the dataset is a channel, so the local
  revision has one token per variate's forecast (ETT: the six load columns
  beside ``OT``) plus one token per exogenous calendar feature over input +
  horizon. Text covariates are out of scope.
* Channel tokens of the local revision embed the base forecast only (the
  paper's "immediate forecasts of covariates"); ``local_input_window=True``
  adds the input window. The local Transformer is small (1 layer, d_model
  32, dropout 0.2): on ETTh1 bigger ones fit the backbone's *training*
  residuals and lowered the validation MSE while raising the test MSE.
* Offline as online, a query only retrieves pairs that matured no later
  than its own origin (the last input step; forecasting/store.py), so no
  query ever sees its own target or a later one.
* PIR learns from the backbone's *out-of-sample* forecasts (the
  calibration scheme of training/forecasting/calibration.py); the paper's
  official code fits on the training windows' in-sample forecasts
  (``calibration="insample"`` restores it).
* The retrieval itself (top-K search) runs outside the network, in numpy,
  so the exported ONNX graph takes the K similarities, normalised targets
  and a validity mask, and the online store can grow without re-export.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from forecasting.contract import EPS, N_TIME_FEATURES


@dataclass
class PIRConfig:
    seq_len: int = 96
    pred_len: int = 96
    n_channels: int = 7
    n_exo: int = N_TIME_FEATURES
    """Exogenous covariates known over input + horizon (calendar features)."""
    channel_dim: int = 16
    """Size of the learned channel embedding E."""
    ue_hidden: int = 128
    """Hidden units of the two-layer identification network."""
    d_model: int = 32
    n_heads: int = 4
    n_layers: int = 1
    d_ff: int = 64
    dropout: float = 0.2
    top_k: int = 50
    beta_hidden: int = 32
    lambda_ue: float = 1.0
    detach_delta: bool = True
    use_local: bool = True
    local_input_window: bool = False
    """Channel tokens also embed the input window (the paper's tokens: the base forecast only)."""
    use_global: bool = True
    retrieval_temperature: float | None = None
    """None: the softmax over similarities has a learned temperature starting at 0.1 (ours); a number fixes it
    (1.0: the plain softmax of the paper)."""
    gates: str = "paper"
    """``paper``: α = σ(w·δ + b) and β = σ(MLP(δ, sims)), one gate per channel, β's bias starting at 0;
    ``per_step``: one gate per horizon step, α's slope kept >= 0 (softplus), β's bias starting at -2."""


class Identification(nn.Module):
    """δ [B, C] >= 0 from x [B, L, C], ȳ [B, H, C] and the channel embedding [C, d].

    The window and the forecast enter instance-normalised together with the
    window's mean and log standard deviation (the same information as the raw
    values, in a form a two-layer network can scale errors with).
    """

    def __init__(self, c: PIRConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(c.seq_len + c.pred_len + 2 + c.channel_dim, c.ue_hidden), nn.GELU(),
                                 nn.Linear(c.ue_hidden, 1))

    def forward(self, xn: torch.Tensor, bn: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                emb: torch.Tensor) -> torch.Tensor:
        # xn [B, C, L], bn [B, C, H], mean/std [B, C, 1], emb [C, d]
        b = xn.shape[0]
        feats = torch.cat([xn, bn, mean, torch.log(std), emb.unsqueeze(0).expand(b, -1, -1)], dim=-1)
        return F.softplus(self.net(feats)).squeeze(-1)


class _Layer(nn.Module):
    """Pre-norm Transformer encoder layer (explicit attention: exports to plain ONNX ops)."""

    def __init__(self, d: int, heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(n, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * (self.head_dim ** -0.5), dim=-1)
        x = x + self.drop(self.out(torch.matmul(attn, v).transpose(1, 2).reshape(n, t, d)))
        return x + self.drop(self.ff(self.norm2(x)))


class LocalRevision(nn.Module):
    """Correction [B, C, H] from channel tokens (x, ȳ normalised) + exogenous tokens, attending across tokens."""

    def __init__(self, c: PIRConfig) -> None:
        super().__init__()
        span = c.seq_len + c.pred_len
        self.with_input = c.local_input_window
        self.channel_in = nn.Linear(span if c.local_input_window else c.pred_len, c.d_model)
        self.channel_emb = nn.Linear(c.channel_dim, c.d_model, bias=False)
        self.exo_in = nn.Linear(span, c.d_model)
        self.exo_type = nn.Parameter(torch.zeros(c.n_exo, c.d_model))
        self.layers = nn.ModuleList(_Layer(c.d_model, c.n_heads, c.d_ff, c.dropout) for _ in range(c.n_layers))
        self.norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.pred_len)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.n_channels = c.n_channels

    def forward(self, xn: torch.Tensor, bn: torch.Tensor, marks: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # xn [B, C, L], bn [B, C, H] (instance-normalised), marks [B, L+H, F], emb [C, d]
        tokens = self.channel_in(torch.cat([xn, bn], dim=-1) if self.with_input else bn) + self.channel_emb(emb)
        exo = self.exo_in(marks.transpose(1, 2)) + self.exo_type
        z = torch.cat([tokens, exo], dim=1)
        for layer in self.layers:
            z = layer(z)
        return self.head(self.norm(z[:, : self.n_channels]))


class GlobalRevision(nn.Module):
    """Retrieval forecast: softmax(sims / τ) over the K normalised targets, de-normalised with the query stats."""

    def __init__(self, c: PIRConfig) -> None:
        super().__init__()
        log_tau = torch.log(torch.tensor(0.1 if c.retrieval_temperature is None else c.retrieval_temperature))
        self.log_tau = nn.Parameter(log_tau, requires_grad=c.retrieval_temperature is None)

    def forward(self, sims: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # sims/mask [B, C, K], targets [B, C, K, H] -> normalised retrieval forecast [B, C, H]
        logits = sims / torch.exp(self.log_tau) + (mask - 1.0) * 1e4
        w = torch.softmax(logits, dim=-1) * mask
        return torch.matmul(w.unsqueeze(-2), targets).squeeze(-2)


class PIR(nn.Module):
    """``forward(x, base, marks, sims, targets, mask) -> (revised [B, H, C], delta [B, C])``."""

    def __init__(self, config: PIRConfig) -> None:
        super().__init__()
        self.config = c = config
        self.channel_embedding = nn.Parameter(torch.randn(c.n_channels, c.channel_dim) * 0.02)
        self.identification = Identification(c)
        self.local = LocalRevision(c)
        self.global_ = GlobalRevision(c)
        if c.gates not in ("paper", "per_step"):
            raise ValueError(f"gates must be 'paper' or 'per_step', got {c.gates!r}")
        gate_out = 1 if c.gates == "paper" else c.pred_len
        self.alpha_w = nn.Parameter(torch.zeros(gate_out))
        self.alpha_b = nn.Parameter(torch.zeros(gate_out))
        self.beta = nn.Sequential(nn.Linear(1 + c.top_k, c.beta_hidden), nn.GELU(), nn.Linear(c.beta_hidden, gate_out))
        nn.init.constant_(self.beta[-1].bias, 0.0 if c.gates == "paper" else -2.0)
        self.register_buffer("keep", torch.ones(c.n_channels, c.pred_len))
        """The guard's decisions (training/forecasting/guard.py): 0 where the revision did not beat the
        backbone on held-out windows, i.e. α = β = 0 in that channel and horizon block."""

    @staticmethod
    def _stats(x: torch.Tensor, base: torch.Tensor):
        xt = x.transpose(1, 2)  # [B, C, L]
        mean = xt.mean(dim=-1, keepdim=True)
        std = torch.sqrt(xt.var(dim=-1, keepdim=True, unbiased=False) + EPS)
        bt = base.transpose(1, 2)  # [B, C, H]
        return bt, mean, std, (xt - mean) / std, (bt - mean) / std

    def estimate(self, x: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """The identification alone: δ [B, C]."""
        _, mean, std, xn, bn = self._stats(x, base)
        return self.identification(xn, bn, mean, std, self.channel_embedding)

    def forward(self, x: torch.Tensor, base: torch.Tensor, marks: torch.Tensor, sims: torch.Tensor,
                targets: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        bt, mean, std, xn, bn = self._stats(x, base)
        delta = self.identification(xn, bn, mean, std, self.channel_embedding)  # [B, C]
        d_in = (delta.detach() if c.detach_delta else delta).unsqueeze(-1)  # [B, C, 1]

        correction = torch.zeros_like(bt)
        if c.use_local:
            y_local = self.local(xn, bn, marks, self.channel_embedding) * std
            alpha = self._alpha(d_in)
            correction = correction + alpha * y_local
        if c.use_global:
            y_ret = self.global_(sims, targets, mask) * std + mean
            y_global = y_ret - bt
            beta = self._beta(d_in, sims, mask)
            correction = correction + beta * y_global
        return base + (correction * self.keep).transpose(1, 2), delta

    def _alpha(self, d_in: torch.Tensor) -> torch.Tensor:
        slope = self.alpha_w if self.config.gates == "paper" else F.softplus(self.alpha_w)
        return torch.sigmoid(slope * d_in + self.alpha_b)

    def _beta(self, d_in: torch.Tensor, sims: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        has = mask.amax(dim=-1, keepdim=True)  # [B, C, 1]: any valid neighbour
        return torch.sigmoid(self.beta(torch.cat([d_in, sims * mask], dim=-1))) * has

    def gates(self, x: torch.Tensor, base: torch.Tensor, sims: torch.Tensor,
              mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """α and β [B, C, H or 1] as :meth:`forward` applies them, the guard's ``keep`` included."""
        d_in = self.estimate(x, base).unsqueeze(-1)
        return self._alpha(d_in) * self.keep, self._beta(d_in, sims, mask) * self.keep

    def loss(self, revised: torch.Tensor, delta: torch.Tensor, base: torch.Tensor,
             y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        realised = ((base - y) ** 2).mean(dim=1)  # [B, C]
        mse = F.mse_loss(revised, y)
        ue = F.l1_loss(delta, realised)
        total = mse + self.config.lambda_ue * ue
        return total, {"mse": float(mse.detach()), "ue_l1": float(ue.detach())}
