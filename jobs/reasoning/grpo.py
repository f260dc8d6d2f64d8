"""Group Relative Policy Optimization (GRPO), as pure tensor functions.

DeepSeekMath (Shao et al., 2024), eq. 3, and the TRL/verl implementations the RLVR papers use:
for each prompt a group of G responses is sampled from the old policy; each response's advantage
is its reward standardised within its group, ``A_i = (r_i - mean(r)) / (std(r) + eps)`` (no value
network); every token of response i shares ``A_i``. The objective is PPO's clipped surrogate plus
a KL penalty to a frozen reference policy, estimated per token with the unbiased, always-positive
``k3`` estimator ``exp(ref - logp) - (ref - logp) - 1`` (Schulman's approximation, the paper's
eq. 4). The paper averages tokens within each response, then responses (``loss_type="sequence"``);
DAPO and recent TRL average over all tokens of the batch (``"token"``), switchable here.

Why pure functions: the same loss trains a GRU on CPU and a transformer on a GPU; the loops that
sample and score live in each job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch


@dataclass(frozen=True)
class GRPOConfig:
    group_size: int = 8
    """G: responses sampled per prompt (DeepSeekMath uses 64; 8 is TRL's default)."""
    clip_eps: float = 0.2
    """ε of the clipped ratio (PPO/GRPO default)."""
    kl_beta: float = 0.04
    """β of the KL penalty to the reference policy (DeepSeekMath's 0.04)."""
    scale_rewards: bool = True
    """Divide by the group's std (the paper); False: only centre (Dr. GRPO's choice)."""
    loss_type: Literal["sequence", "token"] = "sequence"
    """sequence: mean over each response's tokens, then over responses (the paper's eq. 3);
    token: mean over all tokens of the batch (DAPO)."""
    adv_eps: float = 1e-4


def group_advantages(rewards: torch.Tensor, group_size: int, *, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """Rewards of shape [B*G] (groups contiguous) -> advantages of the same shape. A group whose
    responses all got the same reward has zero advantage: it carries no learning signal."""
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be flat with a multiple of group_size={group_size} entries, got {tuple(rewards.shape)}")
    grouped = rewards.view(-1, group_size).float()
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(dim=1, keepdim=True, unbiased=True) + eps)
    return centred.reshape(-1)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL(π || π_ref) estimate ``exp(ref-logp) - (ref-logp) - 1`` (>= 0, unbiased)."""
    diff = ref_logp - logp
    return torch.exp(diff) - diff - 1.0


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, advantages: torch.Tensor,
              mask: torch.Tensor, cfg: GRPOConfig = GRPOConfig()) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO loss (to minimise) over token log-probs of shape [N, T] with ``mask`` [N, T]
    (1 on response tokens) and per-response ``advantages`` [N]. Returns (loss, stats)."""
    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - old_logp)
    adv = advantages.to(logp.dtype).unsqueeze(1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - cfg.clip_eps, 1.0 + cfg.clip_eps) * adv
    per_token = -torch.min(unclipped, clipped)
    kl = torch.zeros_like(logp)
    if ref_logp is not None and cfg.kl_beta > 0:
        kl = kl_k3(logp, ref_logp)
        per_token = per_token + cfg.kl_beta * kl
    lengths = mask.sum(dim=1).clamp(min=1.0)
    if cfg.loss_type == "sequence":
        loss = ((per_token * mask).sum(dim=1) / lengths).mean()
    elif cfg.loss_type == "token":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    else:
        raise ValueError(f"loss_type must be sequence or token, got {cfg.loss_type!r}")
    with torch.no_grad():
        clipped_share = (((ratio - 1.0).abs() > cfg.clip_eps).to(logp.dtype) * mask).sum() / mask.sum().clamp(min=1.0)
        mean_kl = (kl * mask).sum() / mask.sum().clamp(min=1.0)
    return loss, {"clip_share": float(clipped_share), "kl": float(mean_kl)}
