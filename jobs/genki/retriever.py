"""The dense passage retriever of GenKI: all-MiniLM-L6-v2 (the backends' embedder, as a trainable
sentence-transformers module) fine-tuned on (question, gold passage) pairs with the in-batch-negative
InfoNCE loss of DPR:

    L = -log exp(s(q_i, p_i) / tau) / sum_j exp(s(q_i, p_j) / tau),   s = cosine similarity,

the other passages of the batch being the negatives. Departures: one encoder shared by questions
and passages (DPR trains two BERT encoders; MiniLM is small enough that one is the usual choice), and
a batch-mate holding the same gold passage is masked out of the negatives (it is not a negative).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def load_trainable_encoder() -> Any:
    """A fresh all-MiniLM-L6-v2 from the backends' wheel, on the CPU."""
    from jobs.backends.embed import minilm_dir
    from jobs.backends.local import quiet_hf

    quiet_hf()
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_dir(), device="cpu")


def encode(model: Any, texts: list[str], batch_size: int = 64) -> np.ndarray:
    vecs = model.encode(texts, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True)
    return (vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def info_nce(q: Any, p: Any, gold: list[int], temperature: float) -> Any:
    """In-batch-negative InfoNCE over L2-normalised (B, d) question and passage embeddings; pairs
    sharing a gold passage are not each other's negatives."""
    import torch
    import torch.nn.functional as F

    logits = F.normalize(q, dim=-1) @ F.normalize(p, dim=-1).T / temperature
    g = torch.tensor(gold)
    same = (g[:, None] == g[None, :]) & ~torch.eye(len(gold), dtype=torch.bool)
    logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(gold)))


def finetune_retriever(model: Any, questions: list[str], passages: list[str], gold: list[int], *,
                       epochs: int, batch_size: int, lr: float, temperature: float, seed: int,
                       ctx: Any = None) -> list[float]:
    """Trains ``model`` in place on (questions[i], passages[gold[i]]); returns the loss per step."""
    import torch

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses: list[float] = []
    for _ in range(epochs):
        order = rng.permutation(len(questions))
        for start in range(0, len(order) - 1, batch_size):
            idx = order[start:start + batch_size]
            if len(idx) < 2:
                continue
            if ctx is not None:
                ctx.check_cancel()
            prep = getattr(model, "preprocess", model.tokenize)
            qf = prep([questions[i] for i in idx])
            pf = prep([passages[gold[i]] for i in idx])
            q = model(qf)["sentence_embedding"]
            p = model(pf)["sentence_embedding"]
            loss = info_nce(q, p, [gold[i] for i in idx], temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    model.eval()
    return losses


def rank(query_vecs: np.ndarray, passage_vecs: np.ndarray, k: int) -> np.ndarray:
    """Top-k passage ids per query, best first."""
    from jobs.backends.embed import vector_index

    ids, _ = vector_index(passage_vecs).search(query_vecs, k)
    return ids
