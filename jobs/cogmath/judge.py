"""Judging a model's answer to an inquiry: rule-based where the reference is a number (the last
number of the answer, or the one after '####' / 'The answer is'), a refusal check where the
inquiry is meant to be unsolvable, and an LLM judge (the paper's form, GPT-4 there) through any
text backend. Both are checked against a hand-labelled sample (judge_labels.json)."""

from __future__ import annotations

import math
import re

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
REFUSAL_CUES = (
    "cannot", "can't", "can not", "unable", "not enough", "insufficient", "missing", "not provided", "not given",
    "not specified", "not stated", "doesn't make sense", "does not make sense", "unclear", "not possible",
    "impossible to", "incomplete", "need more information", "more information", "not solvable", "unsolvable",
    "ambiguous", "not clear",
)


def _to_float(token: str) -> float | None:
    try:
        return float(token.replace(",", ""))
    except ValueError:
        return None


def final_number(text: str) -> float | None:
    """The answer's number: after '####' or 'answer is' when present, else the last number."""
    for marker in ("####", "answer is", "answer:"):
        pos = text.lower().rfind(marker)
        if pos >= 0:
            found = NUMBER.findall(text[pos:])
            if found:
                return _to_float(found[0])
    found = NUMBER.findall(text)
    return _to_float(found[-1]) if found else None


def numbers_match(a: float | None, b: float | None, rel: float = 1e-4) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=rel, abs_tol=1e-6)


def says_unsolvable(response: str) -> bool:
    low = response.lower()
    return any(cue in low for cue in REFUSAL_CUES)


def rule_judge(expect: str, reference: str, response: str) -> bool | None:
    """Pass/fail by rule, or None when the rule cannot decide (a reference that is not a number)."""
    if expect == "unsolvable":
        return says_unsolvable(response)
    ref = final_number(reference)
    if ref is None:
        return None
    return numbers_match(final_number(response), ref) and not says_unsolvable(response)


def llm_criterion(expect: str) -> str:
    if expect == "unsolvable":
        return "Does the student say that the question cannot be answered as posed?"
    return "Does the student's final answer equal the reference answer?"


def parse_yes_no(text: str) -> bool:
    return text.strip().lower().lstrip("*\"' ").startswith("yes")
