"""Building blocks of the pretraining and of the knowledge-injection runs (runs.py drives them).

Timeline of an injection run (the paper's, with steps scaled down): from a pretrained checkpoint
(model and AdamW state), training continues on background batches; at injection steps a fictional
document's chunks *replace* part of the background batch (the batch keeps its size, as in the paper;
a document larger than the batch makes the step train on the document alone). Paraphrase-regime
documents are injected `n_injections` times, each time as a different version (the original, then
its paraphrases); duplicate-regime documents `n_injections` times verbatim; once-regime documents a
single time; control documents never. The paper injects all documents at the same steps into a
2048-sequence batch; here one document is larger than a small batch, so documents are staggered:
document j of the round-robin order is injected at first_step + j + k * interval, and each
document's analysis is aligned on its own injection steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .corpus import Probe
from .gpt import SmallGPT

REGIMES = ("paraphrase", "duplicate", "once")
IGNORE = -100


@dataclass
class Injection:
    doc: int
    regime: str          # one of REGIMES or "control"
    steps: list[int]     # states before the updates that see the document
    versions: list[str]  # text injected at each of those steps


def injection_plan(items: list[dict], docs_per_regime: int, control_docs: int, n_injections: int,
                   interval: int, first_step: int) -> list[Injection]:
    """Items 0-39 (with paraphrases) -> paraphrase, 40-79 -> duplicate, 80-119 -> once, 120+ -> control,
    the split of the official code; the first `docs_per_regime` of each group are used."""
    groups = {"paraphrase": 0, "duplicate": 40, "once": 80}
    if docs_per_regime > 40 or control_docs > len(items) - 120:
        raise ValueError(f"at most 40 documents per regime and {len(items) - 120} control documents")
    order = [(r, groups[r] + j) for j in range(docs_per_regime) for r in REGIMES]
    if interval < len(order):
        raise ValueError(f"injection_interval={interval} must be >= the {len(order)} staggered documents")
    plan = []
    for slot, (regime, d) in enumerate(order):
        it = items[d]
        if regime == "paraphrase":
            versions = ([it["train_context"]] + list(it["paraphrases"]))[:n_injections]
            if len(versions) < n_injections:
                raise ValueError(f"item {d} has only {len(versions)} versions for {n_injections} injections")
        else:
            versions = [it["train_context"]] * (1 if regime == "once" else n_injections)
        plan.append(Injection(d, regime, [first_step + slot + k * interval for k in range(len(versions))], versions))
    for c in range(control_docs):
        plan.append(Injection(120 + c, "control", [first_step + len(order)], []))
    return plan


def eval_schedule(inj: Injection, total: int, window: int, eval_every: int, n_tail: int = 25) -> list[int]:
    """States at which a document's probes are scored: every step in each post-injection window, a log-spaced
    grid after its last injection, every `eval_every` steps, and the first and last states."""
    steps = {0, total, inj.steps[0]}
    steps.update(range(0, total + 1, max(eval_every, 1)))
    if inj.regime != "control":
        for t in inj.steps:
            steps.update(range(t, min(t + window + 1, total) + 1))
        last = inj.steps[-1]
        steps.update(last + int(x) for x in np.geomspace(1, max(total - last, 1), n_tail))
    return sorted(s for s in steps if 0 <= s <= total)


def chunk(ids: list[int], context: int) -> list[tuple[list[int], list[int]]]:
    """Split a token sequence into (input, target) windows of `context` tokens, the last padded."""
    out = []
    for start in range(0, max(len(ids) - 1, 1), context):
        w = ids[start:start + context + 1]
        x, y = w[:-1], w[1:]
        pad = context - len(x)
        out.append((x + [0] * pad, y + [IGNORE] * pad))
    return out


class BackgroundSampler:
    """Random windows of the background token stream, seeded."""

    def __init__(self, ids: np.ndarray, context: int, seed: int):
        if len(ids) <= context + 1:
            raise ValueError("background corpus shorter than one context window")
        self.ids, self.context = ids, context
        self.rng = np.random.default_rng(seed)

    def windows(self, n: int) -> list[tuple[list[int], list[int]]]:
        starts = self.rng.integers(0, len(self.ids) - self.context - 1, size=n)
        return [(self.ids[s:s + self.context].tolist(), self.ids[s + 1:s + self.context + 1].tolist()) for s in starts]


def to_batch(pairs: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])


def train_step(model: SmallGPT, opt: torch.optim.Optimizer, pairs, lr: float) -> float:
    for g in opt.param_groups:
        g["lr"] = lr
    x, y = to_batch(pairs)
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=IGNORE)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()


def lr_at(step: int, lr: float, warmup: int) -> float:
    """Linear warmup then constant: the injection runs continue at the pretraining learning rate."""
    return lr * min(1.0, (step + 1) / max(warmup, 1))


def make_optimizer(model: SmallGPT, lr: float, weight_decay: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)


@torch.no_grad()
def probe_logprobs(model: SmallGPT, probes: list[Probe], batch: int = 128) -> list[float]:
    """Mean log-probability of each probe's target tokens given its input (the paper's ell(q; theta))."""
    model.eval()
    out = []
    for i in range(0, len(probes), batch):
        group = probes[i:i + batch]
        seqs = [(p.input_ids + p.target_ids)[-model.context - 1:] for p in group]
        width = max(len(s) for s in seqs) - 1
        x = torch.zeros(len(seqs), width, dtype=torch.long)
        for r, s in enumerate(seqs):
            x[r, :len(s) - 1] = torch.tensor(s[:-1])
        logp = torch.log_softmax(model(x).float(), dim=-1)
        for r, (s, p) in enumerate(zip(seqs, group)):
            n = len(p.target_ids)
            pos = torch.arange(len(s) - 1 - n, len(s) - 1)
            out.append(float(logp[r, pos, torch.tensor(s[-n:])].mean()))
    model.train()
    return out


@torch.no_grad()
def eval_loss(model: SmallGPT, pairs) -> float:
    model.eval()
    x, y = to_batch(pairs)
    loss = float(F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=IGNORE))
    model.train()
    return loss
