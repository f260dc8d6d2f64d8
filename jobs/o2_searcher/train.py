"""One O²-Searcher variant (a sweep cell): evaluate the warm-started local agent without RL, or train it with
GRPO on closed-ended questions with exact match only (``closed``) or on open- and closed-ended
questions with the unified rewards (``unified``), then evaluate it on the held-out questions.

The agent is a causal language model (``LanguageModelAgent``) or the small copy policy of the
tiny preset (tiny_agent.py); both go through the same warm start, GRPO step, rewards and
evaluation here."""

from __future__ import annotations

import copy
import random
import time
from typing import Any

import numpy as np
import torch

from jobs.o2_searcher import rewards as R
from jobs.o2_searcher.agent import Trajectory, rollout, sequence_logprobs
from jobs.o2_searcher.environment import build_env, load_closed, load_open
from jobs.o2_searcher.warmstart import warm_start
from jobs.reasoning.grpo import GRPOConfig, group_advantages, grpo_loss

VARIANTS = ("untrained", "closed", "unified")


def score(traj: Trajectory, embedder: Any, weights: R.OpenRewardWeights) -> dict[str, float]:
    """The paper's rewards of one trajectory: EM for closed questions; format, findings F1 and
    query diversity (weighted sum) for open ones."""
    answer = R.extract_answer(traj.agent_text)
    fmt = R.format_reward(traj.agent_text, traj.question.open_ended)
    searched = float(bool(traj.queries))
    if not traj.question.open_ended:
        em = R.exact_match(answer, traj.question.golds)
        return {"reward": em, "em": em, "format": fmt, "searched": searched}
    findings = R.extract_findings(answer)
    f1 = R.findings_f1(embedder.encode(findings), embedder.encode(traj.question.golds), weights.threshold) if findings else 0.0
    div = R.query_diversity(embedder.encode(traj.queries)) if len(traj.queries) > 1 else 0.0
    total = weights.format * fmt + weights.factual * f1 + weights.diversity * div
    return {"reward": total, "f1": f1, "format": fmt, "diversity": div, "searched": searched}


def evaluate(agent: Any, questions: list, embedder: Any, weights: R.OpenRewardWeights,
             cell: dict[str, Any]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for start in range(0, len(questions), cell["eval_batch"]):
        for t in agent.rollout(agent.module, questions[start:start + cell["eval_batch"]], temperature=0.0):
            kind = "open" if t.question.open_ended else "closed"
            for k, v in score(t, embedder, weights).items():
                out.setdefault(f"{kind}_{k}", []).append(v)
    return out


def load_policy(name: str | None) -> tuple[Any, Any]:
    """The trainable policy: the local default model, or any Hugging Face causal LM (a local
    directory or a hub name where the hub is reachable) for runs at a larger scale on a GPU."""
    if not name:
        from jobs.backends.text import local_model_and_tokenizer

        return local_model_and_tokenizer()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(name), AutoTokenizer.from_pretrained(name)


class LanguageModelAgent:
    """The search agent on a causal language model (agent.py, warmstart.py). The training loop
    sees an agent through ``module``, ``reference()``, ``rollout``, ``logprobs`` and ``warm_start``;
    ``TinyAgent`` (tiny_agent.py) offers the same."""

    def __init__(self, cell: dict[str, Any], env: Any, device: torch.device) -> None:
        dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        self.cell, self.env = cell, env
        self.module, self.tok = load_policy(cell.get("policy_model"))
        self.module.to(device=device, dtype=dtype)
        if cell["gradient_checkpointing"]:   # activations of long trajectories are gigabytes otherwise
            # newer transformers name it activation_checkpointing_* and deprecate the old name
            getattr(self.module, "activation_checkpointing_enable", self.module.gradient_checkpointing_enable)()
        self.pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id

    def reference(self) -> Any:
        ref = copy.deepcopy(self.module).eval()
        getattr(ref, "activation_checkpointing_disable", ref.gradient_checkpointing_disable)()
        return ref

    def rollout(self, module: Any, questions: list, temperature: float) -> list[Trajectory]:
        return rollout(module, self.tok, questions, self.env, max_turns=self.cell["max_turns"],
                       max_new_tokens=self.cell["max_new_tokens"], temperature=temperature)

    def logprobs(self, module: Any, trajs: list[Trajectory]) -> tuple[torch.Tensor, torch.Tensor]:
        return sequence_logprobs(module, trajs, self.pad)

    def warm_start(self, questions: list, seed: int) -> list[float]:
        c = self.cell
        return warm_start(self.module, self.tok, questions, self.env, steps=c["warm_start_steps"],
                          batch=c["warm_start_batch"], lr=c["warm_start_lr"], seed=seed, micro_batch=c["micro_batch"])


def make_agent(cell: dict[str, Any], env: Any, device: torch.device) -> Any:
    if cell.get("policy_model") == "tiny":
        from jobs.o2_searcher.tiny_agent import TinyAgent

        return TinyAgent(cell, env, device)
    return LanguageModelAgent(cell, env, device)


def grpo_step(agent: Any, ref: Any, opt: torch.optim.Optimizer, batch: list, embedder: Any,
              weights: R.OpenRewardWeights, grpo: GRPOConfig, cell: dict[str, Any]) -> dict[str, float]:
    """One GRPO update from ``batch`` (each prompt repeated group_size times, groups contiguous);
    returns the batch's mean rewards and KL."""
    agent.module.eval()
    trajs = agent.rollout(agent.module, batch, temperature=cell["temperature"])
    scores = [score(t, embedder, weights) for t in trajs]
    reward = torch.tensor([s["reward"] for s in scores])
    adv = group_advantages(reward, grpo.group_size, scale=grpo.scale_rewards)
    agent.module.train()
    opt.zero_grad()
    kls = []
    # micro-batches with gradient accumulation: the sequence-mean loss of the whole batch is
    # the size-weighted mean of the micro-batches' losses, so the update is the same
    for lo in range(0, len(trajs), cell["micro_batch"]):
        part = trajs[lo:lo + cell["micro_batch"]]
        with torch.no_grad():
            ref_logp, _ = agent.logprobs(ref, part)
        logp, mask = agent.logprobs(agent.module, part)
        loss, info = grpo_loss(logp, logp.detach(), ref_logp, adv[lo:lo + len(part)].to(logp.device), mask, grpo)
        (loss * len(part) / len(trajs)).backward()
        kls.append(info["kl"])
    torch.nn.utils.clip_grad_norm_(agent.module.parameters(), 1.0)
    opt.step()
    out = {key: float(np.mean([s[key] for s in scores])) for key in ("reward", "format", "searched")}
    out["kl"] = float(np.mean(kls))
    return out


def run_variant(cell: dict[str, Any]) -> dict[str, Any]:
    from jobs.backends.embed import embedder as make_embedder

    started = time.perf_counter()
    torch.set_num_threads(cell.get("threads", 1))
    seed = int(cell["seed"])
    torch.manual_seed(seed)
    rng = random.Random(seed)
    device = torch.device("cuda" if cell["device"] == "auto" and torch.cuda.is_available() else
                          ("cpu" if cell["device"] == "auto" else cell["device"]))
    emb = make_embedder()
    weights = R.OpenRewardWeights(cell["w_format"], cell["w_factual"], cell["w_diversity"], cell["match_threshold"])
    open_train, open_test = load_open("train", cell["open_train"]), load_open("test", cell["open_test"])
    closed, passages = load_closed(cell["closed_train"] + cell["closed_test"], seed=0)
    closed_train, closed_test = closed[:cell["closed_train"]], closed[cell["closed_train"]:]
    env = build_env(load_open("train"), load_open("test"), passages, cell["retrieval"], cell["top_k"], emb)

    agent = make_agent(cell, env, device)
    result: dict[str, Any] = {"variant": cell["variant"], "curve": {}}
    # every variant, the untrained baseline too, starts from the same warm start on demonstrations
    pool = closed_train if cell["variant"] == "closed" else closed_train + open_train
    result["warm_start_loss"] = agent.warm_start(closed_train + open_train, seed)
    if cell["variant"] != "untrained":
        ref = agent.reference()
        grpo = GRPOConfig(group_size=cell["group_size"], clip_eps=cell["clip_eps"], kl_beta=cell["kl_beta"])
        opt = torch.optim.AdamW(agent.module.parameters(), lr=cell["lr"], weight_decay=0.0)
        for _ in range(cell["steps"]):
            batch = [q for q in rng.sample(pool, cell["prompts_per_step"]) for _ in range(grpo.group_size)]
            for key, value in grpo_step(agent, ref, opt, batch, emb, weights, grpo, cell).items():
                result["curve"].setdefault(key, []).append(value)
        del ref
    agent.module.eval()
    result["eval"] = evaluate(agent, open_test + closed_test, emb, weights, cell)
    result["seconds"] = time.perf_counter() - started
    return result
