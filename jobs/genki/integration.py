"""Knowledge integration (GenKI): the generator is fine-tuned with LoRA on two kinds of text --
the knowledge-base passages themselves (plain language-model loss, so the facts enter the weights)
and instructions that carry the passages the retriever returns for a training question, with the
answer as the target (loss on the answer tokens only), so the model learns to read and use retrieved
knowledge in the answer format. Also the scoring and generation helpers the job evaluates with;
the base model is the same module with its adapter switched off (``base_model``)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

INSTRUCTION = "Use the passages to complete the statement with a short phrase.\n\nPassages:\n{passages}\n\nStatement: {question}"
TEMPLATES = (
    INSTRUCTION,
    "Read the passages, then finish the sentence in a few words.\n\n{passages}\n\nSentence: {question}",
    "Knowledge:\n{passages}\n\nContinue this text with the missing words only: {question}",
)
CLOSED_BOOK = "Complete the statement with a short phrase.\n\nStatement: {question}"


def instruction(question: str, passages: list[str], template: str = INSTRUCTION) -> str:
    if not passages:
        return CLOSED_BOOK.format(question=question)
    return template.format(passages="\n".join(f"[{i + 1}] {p}" for i, p in enumerate(passages)), question=question)


@dataclass(frozen=True)
class Example:
    prefix: str
    """Conditioning text (a chat-formatted instruction), or "" for a passage's plain LM loss."""
    target: str


def chat(tok: Any, prompt: str) -> str:
    return tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)


def add_lora(model: Any, rank: int, alpha: int, dropout: float, target_modules: tuple[str, ...]) -> Any:
    import warnings

    from peft import LoraConfig, get_peft_model

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")

    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                     task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


@contextlib.contextmanager
def base_model(model: Any) -> Iterator[Any]:
    """The model with its LoRA adapter switched off (the generator before integration)."""
    with model.disable_adapter():
        yield model


def _tokens(tok: Any, ex: Example, max_tokens: int) -> tuple[list[int], list[int]]:
    head = tok(ex.prefix, add_special_tokens=False)["input_ids"] if ex.prefix else []
    body = tok(ex.target, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if ex.prefix else [])
    head = head[-max(1, max_tokens - len(body)):] if head else head
    ids = (head + body)[:max_tokens]
    labels = ([-100] * len(head) + body)[:max_tokens]
    return ids, labels


def _batch(tok: Any, examples: list[Example], max_tokens: int) -> tuple[Any, Any, Any]:
    import torch

    pairs = [_tokens(tok, ex, max_tokens) for ex in examples]
    width = max(len(i) for i, _ in pairs)
    ids = torch.tensor([i + [tok.pad_token_id] * (width - len(i)) for i, _ in pairs])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in pairs])
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in pairs])
    return ids, mask, labels


def token_nll(model: Any, tok: Any, examples: list[Example], max_tokens: int, batch_size: int = 8) -> list[tuple[float, int]]:
    """(summed negative log-likelihood of each example's target tokens, their number)."""
    import torch
    import torch.nn.functional as F

    out: list[tuple[float, int]] = []
    for start in range(0, len(examples), batch_size):
        ids, mask, labels = _batch(tok, examples[start:start + batch_size], max_tokens)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        tgt = labels[:, 1:]
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1).clamp(min=0),
                              reduction="none").view(tgt.shape) * (tgt != -100)
        out += [(float(nll[r].sum()), int((tgt[r] != -100).sum())) for r in range(len(tgt))]
    return out


def mean_loss(model: Any, tok: Any, examples: list[Example], max_tokens: int) -> float:
    """Mean negative log-likelihood per target token."""
    pairs = token_nll(model, tok, examples, max_tokens)
    return sum(s for s, _ in pairs) / max(1, sum(n for _, n in pairs))


def train_lora(model: Any, tok: Any, examples: list[Example], *, steps: int, batch_size: int, lr: float,
               max_tokens: int, seed: int, ctx: Any = None) -> tuple[list[float], list[int]]:
    """``steps`` AdamW steps over shuffled ``examples`` (the adapter's parameters only); (the loss per
    step, how often each example was drawn)."""
    import numpy as np
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    model.train()
    order: list[int] = []
    losses: list[float] = []
    drawn = [0] * len(examples)
    steps_iter = ctx.progress(range(steps), total=steps, desc="LoRA integration") if ctx is not None else range(steps)
    for _ in steps_iter:
        if ctx is not None:
            ctx.check_cancel()
        if len(order) < batch_size:
            order += list(rng.permutation(len(examples)))
        idx, order = order[:batch_size], order[batch_size:]
        ids, mask, labels = _batch(tok, [examples[i] for i in idx], max_tokens)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        for i in idx:
            drawn[i] += 1
    model.eval()
    return losses, drawn


def generate(model: Any, tok: Any, prompts: list[str], max_tokens: int, *, temperature: float = 0.0,
             seed: int = 0, batch_size: int = 8) -> list[str]:
    """One completion per (already chat-formatted) prompt; greedy at temperature 0."""
    import torch

    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts[start:start + batch_size]]
        width = max(len(e) for e in enc)
        ids = torch.tensor([[tok.pad_token_id] * (width - len(e)) + e for e in enc])
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc])
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "do_sample": temperature > 0,
                                  "pad_token_id": tok.pad_token_id}
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=1.0, top_k=0)
            torch.manual_seed(seed + start)
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        out += tok.batch_decode(gen[:, width:], skip_special_tokens=True)
    return out
