"""O²-Searcher's rewards (Mei et al., 2025), as pure functions over the agent's text.

The agent writes ``<think>..</think>`` then either ``<search>q1; q2</search>`` (the environment
answers with ``<information>..</information>``) or, at the end, ``<answer>..</answer>``. For an
open-ended question the answer lists key findings, one per line starting with "- ".

* closed-ended: exact match of the normalised answer with any gold answer (SQuAD normalisation);
* open-ended: a format reward, a factual reward -- F1 of the answer's key findings against the
  reference findings, a finding counting as matched when its embedding cosine similarity passes a
  threshold under a one-to-one Hungarian assignment -- and a query-diversity reward (one minus
  the mean pairwise cosine similarity of the agent's queries). The paper sums the open-ended
  terms with weights; ``OpenRewardWeights`` holds ours (the paper's exact weights and diversity
  form were not available to us: this is our reading, switchable).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

import numpy as np

TAG = re.compile(r"<(think|search|answer|information)>(.*?)</\1>", re.S)


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str | None, golds: list[str]) -> float:
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def extract_answer(text: str) -> str | None:
    found = re.findall(r"<answer>(.*?)</answer>", text, re.S)
    return found[-1].strip() if found else None


def extract_queries(text: str) -> list[str]:
    queries = []
    for block in re.findall(r"<search>(.*?)</search>", text, re.S):
        queries += [q.strip() for q in re.split(r"[;\n]", block) if q.strip()]
    return queries


def extract_findings(answer: str | None) -> list[str]:
    if not answer:
        return []
    lines = [ln.strip() for ln in answer.splitlines()]
    findings = [ln[1:].strip() for ln in lines if ln.startswith(("-", "*", "•"))]
    return [f for f in findings if f] or ([answer.strip()] if answer.strip() else [])


def format_reward(agent_text: str, open_ended: bool) -> float:
    """1 when the agent's own turns use only the protocol's tags, end with exactly one answer, and
    (open-ended) the answer lists findings; else 0."""
    answers = re.findall(r"<answer>(.*?)</answer>", agent_text, re.S)
    if len(answers) != 1 or not agent_text.rstrip().endswith("</answer>"):
        return 0.0
    stripped = TAG.sub("", agent_text).strip()
    if stripped:
        return 0.0
    if open_ended and not any(ln.strip().startswith("-") for ln in answers[0].splitlines()):
        return 0.0
    return 1.0


def matched_findings(similarity: np.ndarray, threshold: float) -> int:
    """Findings matched one-to-one (Hungarian assignment maximising similarity) above threshold."""
    if similarity.size == 0:
        return 0
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(-similarity)
    return int((similarity[rows, cols] >= threshold).sum())


def findings_f1(predicted: np.ndarray, reference: np.ndarray, threshold: float) -> float:
    """F1 of predicted vs reference findings, both as L2-normalised embeddings [n, d]."""
    if len(predicted) == 0 or len(reference) == 0:
        return 0.0
    matched = matched_findings(predicted @ reference.T, threshold)
    if matched == 0:
        return 0.0
    precision, recall = matched / len(predicted), matched / len(reference)
    return 2 * precision * recall / (precision + recall)


def query_diversity(queries: np.ndarray) -> float:
    """1 − mean pairwise cosine similarity of the queries (L2-normalised [n, d]); 0 for < 2 queries."""
    n = len(queries)
    if n < 2:
        return 0.0
    sim = queries @ queries.T
    mean_off = (sim.sum() - np.trace(sim)) / (n * (n - 1))
    return float(np.clip(1.0 - mean_off, 0.0, 1.0))


@dataclass(frozen=True)
class OpenRewardWeights:
    format: float = 1.0
    factual: float = 1.0
    diversity: float = 0.5
    threshold: float = 0.75
    """Cosine similarity above which a predicted finding matches a reference one."""
