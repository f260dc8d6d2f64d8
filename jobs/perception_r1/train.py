"""One Perception-R1 training run (a sweep cell): a supervised warm start on captions of
generated figures, an evaluation, GRPO with one reward, another evaluation.

Both reward variants of a seed start from the identical warm-started policy (same seed, same
data), so their before/after comparison is paired on the same test figures."""

from __future__ import annotations

import copy
import time
from typing import Any

import torch

from jobs.perception_r1.policy import PerceptionPolicy
from jobs.perception_r1.task import Problems, make_problems, reference_response, rewards
from jobs.reasoning.grpo import GRPOConfig, group_advantages, grpo_loss

REWARDS = ("accuracy_format", "accuracy_format_perception")


def total_reward(parts: dict[str, float], variant: str, perception_weight: float) -> float:
    """The paper's sum: accuracy + format (+ the weighted visual-perception reward)."""
    total = parts["accuracy"] + parts["format"]
    if variant == "accuracy_format_perception":
        total += perception_weight * parts["perception"]
    elif variant != "accuracy_format":
        raise ValueError(f"reward must be one of {REWARDS}, got {variant!r}")
    return total


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def warm_start(policy: PerceptionPolicy, data: Problems, steps: int, lr: float, batch: int, gen: torch.Generator,
               device: torch.device) -> None:
    targets = torch.tensor([reference_response(int(r), int(b), a) for r, b, a in zip(data.red, data.blue, data.answers)])
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(len(data), (batch,), generator=gen)
        logp = policy.token_logprobs(data.images[idx].to(device), data.questions[idx].to(device), targets[idx].to(device))
        loss = -logp.sum(dim=1).mean()
        opt.zero_grad(); loss.backward(); opt.step()


@torch.no_grad()
def evaluate(policy: PerceptionPolicy, data: Problems, device: torch.device) -> dict[str, list[int]]:
    """Greedy responses on every test figure: per item, was the perception (both counts), the
    answer and the format right."""
    tokens, _ = policy.sample(data.images.to(device), data.questions.to(device), greedy=True)
    out: dict[str, list[int]] = {"perception": [], "accuracy": [], "format": []}
    for i, row in enumerate(tokens.cpu().tolist()):
        parts = rewards(row, int(data.red[i]), int(data.blue[i]), data.answers[i])
        out["perception"].append(int(parts["perception_all"]))
        out["accuracy"].append(int(parts["accuracy"]))
        out["format"].append(int(parts["format"]))
    return out


def run_variant(cell: dict[str, Any]) -> dict[str, Any]:
    """A sweep cell: {reward, seed, and the config's training fields} -> curves and evaluations."""
    if cell["inner_epochs"] < 1:
        raise ValueError(f"inner_epochs must be at least 1, got {cell['inner_epochs']}")
    started = time.perf_counter()
    torch.set_num_threads(1)
    device = pick_device(cell["device"])
    seed = int(cell["seed"])
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    captions = make_problems(cell["caption_items"], seed=10_000 + seed)
    train = make_problems(cell["train_items"], seed=20_000 + seed)
    test = make_problems(cell["test_items"], seed=30_000 + seed)

    policy = PerceptionPolicy(hidden=cell["hidden"]).to(device)
    warm_start(policy, captions, cell["warm_start_steps"], cell["warm_start_lr"], cell["batch_size"], gen, device)
    before = evaluate(policy, test, device)
    reference = copy.deepcopy(policy).eval()
    for p in reference.parameters():
        p.requires_grad_(False)

    grpo = GRPOConfig(group_size=cell["group_size"], clip_eps=cell["clip_eps"], kl_beta=cell["kl_beta"],
                      loss_type=cell["loss_type"])
    opt = torch.optim.Adam(policy.parameters(), lr=cell["lr"])
    curve: dict[str, list[float]] = {"reward": [], "accuracy": [], "format": [], "perception": [], "kl": []}
    sample_gen = torch.Generator(device=device).manual_seed(seed + 1)
    for _ in range(cell["steps"]):
        idx = torch.randint(len(train), (cell["prompts_per_step"],), generator=gen).repeat_interleave(grpo.group_size)
        batch = train.take(idx)
        images, questions = batch.images.to(device), batch.questions.to(device)
        tokens, mask = policy.sample(images, questions, generator=sample_gen)
        parts = [rewards(row, int(r), int(b), a) for row, r, b, a in
                 zip(tokens.cpu().tolist(), batch.red, batch.blue, batch.answers)]
        reward = torch.tensor([total_reward(p, cell["reward"], cell["perception_weight"]) for p in parts])
        adv = group_advantages(reward, grpo.group_size, scale=grpo.scale_rewards).to(device)
        with torch.no_grad():
            old_logp = policy.token_logprobs(images, questions, tokens)
            ref_logp = reference.token_logprobs(images, questions, tokens)
        for _ in range(cell["inner_epochs"]):
            logp = policy.token_logprobs(images, questions, tokens)
            loss, info = grpo_loss(logp, old_logp, ref_logp, adv, mask, grpo)
            opt.zero_grad(); loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
        curve["reward"].append(float(reward.mean()))
        for key in ("accuracy", "format", "perception"):
            curve[key].append(sum(p[key] for p in parts) / len(parts))
        curve["kl"].append(info["kl"])
    after = evaluate(policy, test, device)
    return {"curve": curve, "before": before, "after": after, "seconds": time.perf_counter() - started}
