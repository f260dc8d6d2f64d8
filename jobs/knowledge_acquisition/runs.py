"""Pretraining the base model (in the run's process), and one injection run (a sweep cell).

Cells are module-level functions of a JSON-able dict (the platform sends them to worker
processes or cluster pods). A cell reads the checkpoint named in it and seeds itself from the
cell's explicit `seed`, so results do not depend on the run directory.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from .corpus import PROBE_KINDS, WordByteTokenizer, background_corpus, build_probes, corpus_sha256, load_fictional
from jobs.sweep import seed_all

from .experiment import (BackgroundSampler, chunk, eval_loss, eval_schedule, injection_plan, lr_at, make_optimizer,
                         probe_logprobs, train_step)
from .gpt import SmallGPT


def _setup(cfg: dict) -> tuple[WordByteTokenizer, np.ndarray, np.ndarray, str]:
    docs = background_corpus(cfg["background_max_chars"])
    tok = WordByteTokenizer.fit(docs, cfg["vocab_size"])
    ids = np.asarray([t for d in docs for t in tok.encode(d) + [10]], dtype=np.int64)
    n_val = max(len(ids) // 20, cfg["context"] + 2)
    return tok, ids[:-n_val], ids[-n_val:], corpus_sha256(docs)


def _model(cfg: dict, vocab: int) -> SmallGPT:
    return SmallGPT(vocab, cfg["d_model"], cfg["n_layer"], cfg["n_head"], cfg["context"])


def checkpoint_path(out_dir: Path | str, steps: int) -> Path:
    return Path(out_dir) / f"pretrained-{steps}steps.pt"


def pretrain(cfg: dict, ctx, out_dir: Path, save_at: list[int]) -> dict:
    """Pretrain from scratch on the background corpus in this process (progress, resumable every
    `resume_every` steps); save model + AdamW state at each step in `save_at` for the injection cells."""
    seed = ctx.seed
    seed_all(seed)
    tok, train_ids, val_ids, sha = _setup(cfg)
    model = _model(cfg, tok.vocab_size)
    opt = make_optimizer(model, cfg["lr"], cfg["weight_decay"])
    sampler = BackgroundSampler(train_ids, cfg["context"], seed)
    val = BackgroundSampler(val_ids, cfg["context"], seed + 1).windows(64)
    state = ctx.load_state("pretrain")
    first, losses, val_losses = 0, [], {}
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sampler.rng.bit_generator.state = state["rng"]
        first, losses, val_losses = state["step"], state["losses"], state["val_losses"]
        torch.set_rng_state(state["torch_rng"])
        ctx.log(f"pretraining resumed at step {first}")
    save_at = sorted(save_at)
    started = time.perf_counter()
    for step in ctx.progress(range(first, save_at[-1]), total=save_at[-1] - first, desc="pretrain"):
        losses.append(train_step(model, opt, sampler.windows(cfg["pretrain_batch"]),
                                 lr_at(step, cfg["lr"], cfg["warmup_steps"])))
        if step + 1 in save_at:
            val_losses[str(step + 1)] = round(eval_loss(model, val), 4)
            path = checkpoint_path(out_dir, step + 1)
            tmp = path.with_suffix(f".tmp{os.getpid()}")  # atomic: cluster pods may share out_dir
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "steps": step + 1}, tmp)
            tmp.replace(path)
        if (step + 1) % cfg["resume_every"] == 0 or step + 1 == save_at[-1]:
            ctx.save_state("pretrain", {"model": model.state_dict(), "opt": opt.state_dict(), "step": step + 1,
                                        "rng": sampler.rng.bit_generator.state, "losses": losses,
                                        "val_losses": val_losses, "torch_rng": torch.get_rng_state()})
    return {"corpus_sha256": sha, "corpus_tokens": int(len(train_ids)), "vocab_size": tok.vocab_size,
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_loss_every_10": [round(float(np.mean(losses[i:i + 10])), 4) for i in range(0, len(losses), 10)],
            "val_loss": val_losses, "seconds": round(time.perf_counter() - started, 1)}


def inject_cell(cell: dict) -> dict:
    """Continue training from a checkpoint with the fictional documents injected; score probes on schedule."""
    cfg = cell["cfg"]
    seed_all(cell["seed"])
    tok, train_ids, val_ids, _ = _setup(cfg)
    items = load_fictional()
    model = _model(cfg, tok.vocab_size)
    saved = torch.load(cell["checkpoint"], weights_only=False)
    model.load_state_dict(saved["model"])
    opt = make_optimizer(model, cfg["lr"], cfg["weight_decay"])
    opt.load_state_dict(saved["opt"])
    start = saved["steps"]

    plan = injection_plan(items, cfg["docs_per_regime"], cfg["control_docs"], cfg["n_injections"],
                          cfg["injection_interval"], cfg["first_injection"])
    total = cfg["first_injection"] + cfg["n_injections"] * cfg["injection_interval"] + cfg["tail_steps"]
    probes = {inj.doc: build_probes(items, [inj.doc], tok, cfg["probe_context"]) for inj in plan}
    schedule = {inj.doc: eval_schedule(inj, total, cfg["lam_window"], cfg["eval_every"]) for inj in plan}
    # controls are scored whenever any document is, so their drift (subtracted in the analysis) is
    # measured at the same steps instead of interpolated: it cancels the batch-to-batch common mode
    every = sorted({s for steps in schedule.values() for s in steps})
    for inj in plan:
        if inj.regime == "control":
            schedule[inj.doc] = every
    at_step: dict[int, list[int]] = {}
    for doc, steps in schedule.items():
        for s in steps:
            at_step.setdefault(s, []).append(doc)
    inject_at: dict[int, list[tuple[int, str]]] = {}
    for inj in plan:
        for s, text in zip(inj.steps, inj.versions):
            inject_at.setdefault(s, []).append((inj.doc, text))
    chunks = {text: chunk(tok.encode(text), cfg["context"]) for inj in plan for text in inj.versions}

    sampler = BackgroundSampler(train_ids, cfg["context"], cell["seed"])
    val = BackgroundSampler(val_ids, cfg["context"], cell["seed"] + 1).windows(64)
    values: dict[int, list[list[float]]] = {inj.doc: [] for inj in plan}
    lr = lr_at(start, cfg["lr"], cfg["warmup_steps"])
    val_before, started = eval_loss(model, val), time.perf_counter()
    injected_share = []
    for step in range(total + 1):
        docs_now = at_step.get(step, [])
        if docs_now:
            flat = [p for d in docs_now for p in probes[d]]
            scores = probe_logprobs(model, flat)
            k = 0
            for d in docs_now:
                values[d].append(scores[k:k + len(probes[d])])
                k += len(probes[d])
        if step == total:
            break
        inj_chunks = [c for _, text in inject_at.get(step, []) for c in chunks[text]]
        n_bg = max(cell["batch_size"] - len(inj_chunks), 0)
        if inj_chunks:
            injected_share.append(len(inj_chunks) / (len(inj_chunks) + n_bg))
        train_step(model, opt, inj_chunks + sampler.windows(n_bg), lr)
    docs_out = []
    for inj in plan:
        matrix = np.asarray(values[inj.doc]).T  # probes x evaluations
        docs_out.append({"doc": inj.doc, "regime": inj.regime, "injections": inj.steps, "steps": schedule[inj.doc],
                         "kinds": [p.kind for p in probes[inj.doc]],
                         "logprob": np.round(matrix, 4).tolist()})
    return {"label": cell["label"], "batch_size": cell["batch_size"], "pretrain_steps": start, "total_steps": total,
            "val_loss_before": round(val_before, 4), "val_loss_after": round(eval_loss(model, val), 4),
            "mean_injected_share": round(float(np.mean(injected_share)), 3), "kinds": list(PROBE_KINDS),
            "docs": docs_out, "seconds": round(time.perf_counter() - started, 1)}
