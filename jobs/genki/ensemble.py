"""GenKI's consistency-based ensemble for the answer format: several answers to one question
(different instruction templates, greedy and sampled), and the one that agrees most with the others
is kept -- agreement measured by token F1, so the answer most of the candidates share (in content
and in form) wins. Empty answers take no part unless all are empty; ties go to the earliest
candidate (the first template's greedy answer)."""

from __future__ import annotations

from jobs.backends.scoring import normalize_answer, token_f1


def clean_answer(text: str) -> str:
    """The first line of a generation, without a trailing sentence."""
    line = text.strip().split("\n")[0].strip()
    return line.split(". ")[0].rstrip(".").strip()


def consistency_pick(candidates: list[str]) -> tuple[str, list[float]]:
    """(the most consistent candidate, each candidate's summed agreement with the others)."""
    if not candidates:
        raise ValueError("the ensemble needs at least one candidate answer")
    live = [i for i, c in enumerate(candidates) if normalize_answer(c)] or list(range(len(candidates)))
    scores = [sum(token_f1(candidates[i], candidates[j]) for j in live if j != i) if i in live else -1.0
              for i in range(len(candidates))]
    best = max(live, key=lambda i: (scores[i], -i))
    return candidates[best], scores


def majority_share(candidates: list[str]) -> float:
    """Share of candidates equal (after normalisation) to the most common one."""
    norm = [normalize_answer(c) for c in candidates]
    return max(norm.count(n) for n in set(norm)) / len(norm)
