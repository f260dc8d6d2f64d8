"""The paper's Inquiry, Judge and Reference agents, for problems without published inquiries.

For each dimension the Inquiry agent writes an inquiry from the original problem; the Judge agent
checks it against the dimension's criterion, and the Inquiry agent tries again (at a higher
temperature, a new sample) until the Judge accepts or ``max_rounds`` is spent -- the last
attempt is then kept and marked unaccepted. The Reference agent answers the accepted inquiries
of dimensions 5-9; dimensions 1 and 4 keep the original answer and 2-3 expect a refusal. Needs a
capable model (an endpoint): the local 135M model cannot write valid inquiries.
"""

from __future__ import annotations

from typing import Any

from jobs.cogmath.dimensions import BY_NUMBER, INQUIRY_PROMPT, JUDGE_PROMPT, REFERENCE_PROMPT, SOLVER_SYSTEM
from jobs.cogmath.judge import parse_yes_no
from jobs.cogmath.problems import Inquiry, Problem


def generate_inquiries(backend: Any, problem: Problem, dimensions: list[int], *, max_rounds: int = 3,
                       max_tokens: int = 256) -> tuple[list[Inquiry], dict[int, int]]:
    """The problem's inquiries and, per dimension, the rounds used (negative: never accepted)."""
    from jobs.backends.text import GenParams

    pending = list(dimensions)
    texts: dict[int, str] = {}
    rounds: dict[int, int] = {}
    for attempt in range(max_rounds):
        if not pending:
            break
        params = GenParams(temperature=0.0 if attempt == 0 else 0.7, max_tokens=max_tokens, seed=attempt)
        prompts = [INQUIRY_PROMPT.format(problem=problem.text, task=BY_NUMBER[d].inquiry_task) for d in pending]
        drafts = [out[0].strip() for out in backend.generate(prompts, params)]
        checks = [JUDGE_PROMPT.format(problem=problem.text, inquiry=draft, check=BY_NUMBER[d].judge_check)
                  for d, draft in zip(pending, drafts)]
        verdicts = [parse_yes_no(out[0]) for out in backend.generate(checks, GenParams(temperature=0.0, max_tokens=4))]
        still = []
        for d, draft, ok in zip(pending, drafts, verdicts):
            texts[d] = draft
            if ok:
                rounds[d] = attempt + 1
            else:
                still.append(d)
        pending = still
    for d in pending:
        rounds[d] = -max_rounds
    need_reference = [d for d in dimensions if BY_NUMBER[d].expect == "reference"]
    answers = backend.generate([REFERENCE_PROMPT.format(inquiry=texts[d]) for d in need_reference],
                               GenParams(temperature=0.0, max_tokens=max_tokens), system=SOLVER_SYSTEM)
    references = {d: out[0] for d, out in zip(need_reference, answers)}
    inquiries = [Inquiry(d, texts[d], {"original": problem.answer, "unsolvable": ""}.get(BY_NUMBER[d].expect,
                                                                                         references.get(d, "")))
                 for d in dimensions]
    return inquiries, rounds
