"""Evaluation of one condition of the GenKI comparison: the gold target's log-probability under the
generator, and the answer it writes (greedy, or the consistency ensemble over templates and samples)
scored by exact match and token F1; plus the least-squares line of the retrieval-frequency claim."""

from __future__ import annotations

import math
from typing import Any

from jobs.genki.ensemble import clean_answer, consistency_pick, majority_share
from jobs.genki.integration import TEMPLATES, Example, chat, generate, instruction, token_nll


def evaluate(model: Any, tok: Any, questions: list[str], answers: list[str], contexts: list[list[str]], *,
             answer_tokens: int, max_tokens: int, ensemble: bool, samples: int, temperature: float,
             seed: int) -> list[dict]:
    """One row per question: gold log-prob per token, the answer, EM and F1."""
    from jobs.backends.scoring import exact_match, token_f1

    prompts = [chat(tok, instruction(q, c)) for q, c in zip(questions, contexts)]
    nll = token_nll(model, tok, [Example(p, " " + a) for p, a in zip(prompts, answers)], max_tokens)
    greedy = [clean_answer(t) for t in generate(model, tok, prompts, answer_tokens)]
    rows = []
    candidates: list[list[str]] = [[g] for g in greedy]
    if ensemble:
        for template in TEMPLATES[1:] if any(contexts) else ():
            alt = [chat(tok, instruction(q, c, template)) for q, c in zip(questions, contexts)]
            for i, t in enumerate(generate(model, tok, alt, answer_tokens)):
                candidates[i].append(clean_answer(t))
        for s in range(samples):
            for i, t in enumerate(generate(model, tok, prompts, answer_tokens, temperature=temperature, seed=seed + 1000 * s)):
                candidates[i].append(clean_answer(t))
    for i, (a, (s, n)) in enumerate(zip(answers, nll)):
        pick = consistency_pick(candidates[i])[0] if ensemble else greedy[i]
        rows.append({"logprob_per_token": -s / max(1, n), "answer": pick, "greedy": greedy[i], "candidates": candidates[i],
                     "majority_share": majority_share(candidates[i]),
                     "em": exact_match(pick, [a]), "f1": token_f1(pick, a),
                     "greedy_em": exact_match(greedy[i], [a]), "greedy_f1": token_f1(greedy[i], a)})
    return rows


def linear_fit(x: list[float], y: list[float]) -> dict:
    """Least-squares y = intercept + slope * x, with R^2 (nan when x or y is constant)."""
    n = len(x)
    if n < 2:
        raise ValueError("a line needs at least two points")
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    slope = sxy / sxx if sxx else 0.0
    r2 = sxy * sxy / (sxx * syy) if sxx and syy else math.nan
    return {"slope": slope, "intercept": my - slope * mx, "r2": r2, "n": n}
