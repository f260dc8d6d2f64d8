"""Retrieval and answer metrics shared by the retrieval jobs: small pure functions.

``recall_at_k``: share of the gold items found in the top k (the LoCoMo / LongMemEval form, per
query, averaged by the caller); ``ndcg_at_k``: binary-relevance NDCG; ``token_f1`` / ``exact_match``:
SQuAD-style normalisation (lower case, no punctuation or articles), as LoCoMo's QA scorer does.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from typing import Hashable, Sequence


def recall_at_k(ranked: Sequence[Hashable], gold: set, k: int) -> float:
    if not gold:
        raise ValueError("recall needs at least one gold item")
    return len(set(ranked[:k]) & gold) / len(gold)


def ndcg_at_k(ranked: Sequence[Hashable], gold: set, k: int) -> float:
    if not gold:
        raise ValueError("NDCG needs at least one gold item")
    dcg = sum(1.0 / math.log2(i + 2) for i, item in enumerate(ranked[:k]) if item in gold)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(gold))))
    return dcg / ideal


def normalize_answer(text: str) -> str:
    text = str(text).lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the|and)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def best_f1(prediction: str, golds: Sequence[str]) -> float:
    return max(token_f1(prediction, g) for g in golds)


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")
