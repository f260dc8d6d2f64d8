"""One O²-Searcher variant (a sweep cell): evaluate the warm-started local agent without RL, or train it with
GRPO on closed-ended questions with exact match only (``closed``) or on open- and closed-ended
questions with the unified rewards (``unified``), then evaluate it on the held-out questions."""

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


def evaluate(model: Any, tok: Any, env: Any, questions: list, embedder: Any, weights: R.OpenRewardWeights,
             cell: dict[str, Any]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for start in range(0, len(questions), cell["eval_batch"]):
        trajs = rollout(model, tok, questions[start:start + cell["eval_batch"]], env, max_turns=cell["max_turns"],
                        max_new_tokens=cell["max_new_tokens"], temperature=0.0)
        for t in trajs:
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


def run_variant(cell: dict[str, Any]) -> dict[str, Any]:
    from jobs.backends.embed import embedder as make_embedder

    started = time.perf_counter()
    torch.set_num_threads(cell.get("threads", 1))
    seed = int(cell["seed"])
    torch.manual_seed(seed)
    rng = random.Random(seed)
    device = torch.device("cuda" if cell["device"] == "auto" and torch.cuda.is_available() else
                          ("cpu" if cell["device"] == "auto" else cell["device"]))
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    emb = make_embedder()
    weights = R.OpenRewardWeights(cell["w_format"], cell["w_factual"], cell["w_diversity"], cell["match_threshold"])
    open_train, open_test = load_open("train", cell["open_train"]), load_open("test", cell["open_test"])
    closed, passages = load_closed(cell["closed_train"] + cell["closed_test"], seed=0)
    closed_train, closed_test = closed[:cell["closed_train"]], closed[cell["closed_train"]:]
    env = build_env(load_open("train"), load_open("test"), passages, cell["retrieval"], cell["top_k"], emb)

    model, tok = load_policy(cell.get("policy_model"))
    model.to(device=device, dtype=dtype)
    if cell["gradient_checkpointing"]:   # activations of long trajectories are gigabytes otherwise
        model.gradient_checkpointing_enable()
    result: dict[str, Any] = {"variant": cell["variant"], "curve": {}}
    # every variant, the untrained baseline too, starts from the same warm start on demonstrations
    pool = closed_train if cell["variant"] == "closed" else closed_train + open_train
    result["warm_start_loss"] = warm_start(model, tok, closed_train + open_train, env, steps=cell["warm_start_steps"],
                                           batch=cell["warm_start_batch"], lr=cell["warm_start_lr"], seed=seed,
                                           micro_batch=cell["micro_batch"])
    if cell["variant"] != "untrained":
        ref = copy.deepcopy(model).eval()
        ref.gradient_checkpointing_disable()
        grpo = GRPOConfig(group_size=cell["group_size"], clip_eps=cell["clip_eps"], kl_beta=cell["kl_beta"])
        opt = torch.optim.AdamW(model.parameters(), lr=cell["lr"], weight_decay=0.0)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        for _ in range(cell["steps"]):
            batch = [q for q in rng.sample(pool, cell["prompts_per_step"]) for _ in range(grpo.group_size)]
            model.eval()
            trajs = rollout(model, tok, batch, env, max_turns=cell["max_turns"], max_new_tokens=cell["max_new_tokens"],
                            temperature=cell["temperature"])
            scores = [score(t, emb, weights) for t in trajs]
            reward = torch.tensor([s["reward"] for s in scores])
            adv = group_advantages(reward, grpo.group_size).to(device)
            model.train()
            opt.zero_grad()
            kls = []
            # micro-batches with gradient accumulation: the sequence-mean loss of the whole batch is
            # the size-weighted mean of the micro-batches' losses, so the update is the same
            for lo in range(0, len(trajs), cell["micro_batch"]):
                part = trajs[lo:lo + cell["micro_batch"]]
                with torch.no_grad():
                    ref_logp, _ = sequence_logprobs(ref, part, pad)
                logp, mask = sequence_logprobs(model, part, pad)
                loss, info = grpo_loss(logp, logp.detach(), ref_logp, adv[lo:lo + len(part)], mask, grpo)
                (loss * len(part) / len(trajs)).backward()
                kls.append(info["kl"])
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            for key in ("reward", "format", "searched"):
                result["curve"].setdefault(key, []).append(float(np.mean([s[key] for s in scores])))
            result["curve"].setdefault("kl", []).append(float(np.mean(kls)))
        del ref
    model.eval()
    result["eval"] = evaluate(model, tok, env, open_test + closed_test, emb, weights, cell)
    result["seconds"] = time.perf_counter() - started
    return result
