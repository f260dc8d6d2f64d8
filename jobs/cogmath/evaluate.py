"""Evaluating one model on CogMath: answer every original problem and every inquiry, judge each
answer (by rule where the reference is a number or a refusal is expected, by the LLM judge
otherwise), and the judge-agreement check on the hand-labelled sample."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from jobs.cogmath.dimensions import ANSWER_JUDGE_PROMPT, BY_NUMBER, SOLVER_SYSTEM
from jobs.cogmath.judge import final_number, llm_criterion, numbers_match, parse_yes_no, rule_judge, says_unsolvable
from jobs.cogmath.problems import Problem
from jobs.reasoning.stats import cohen_kappa

LABELS = Path(__file__).resolve().parent / "judge_labels.json"


def _numeric_reference(inquiry_text: str, reference: str) -> str:
    """The reference the rule judge may use: '' for open 'why' questions (an explanation is
    expected, the LLM judge decides)."""
    return "" if inquiry_text.lstrip().lower().startswith("why") else reference


def llm_judge(backend: Any, items: list[dict[str, str]], params: Any) -> list[bool]:
    prompts = [ANSWER_JUDGE_PROMPT.format(inquiry=it["inquiry"], reference=it["reference"] or "(none)",
                                          response=it["response"], criterion=llm_criterion(it["expect"]))
               for it in items]
    return [parse_yes_no(out[0]) for out in backend.generate(prompts, params)] if prompts else []


def evaluate_model(backend: Any, judge_backend: Any, problems: list[Problem], *, max_tokens: int,
                   judge_mode: str) -> dict[str, Any]:
    """Per problem: the original answered right?, and per dimension: passed?, how judged."""
    from jobs.backends.text import GenParams

    params = GenParams(temperature=0.0, max_tokens=max_tokens)
    prompts = [p.text for p in problems] + [i.text for p in problems for i in p.inquiries]
    responses: list[str] = []
    batch = 8
    from tqdm import tqdm

    for start in tqdm(range(0, len(prompts), batch), desc=f"answering ({backend.model_id})", leave=False,
                      disable=not sys.stderr.isatty()):
        responses += [out[0] for out in backend.generate(prompts[start:start + batch], params, system=SOLVER_SYSTEM)]
    originals, rest = responses[:len(problems)], responses[len(problems):]

    records, undecided = [], []
    k = 0
    for p, answer in zip(problems, originals):
        rec = {"id": p.id, "source": p.source, "original_correct": numbers_match(final_number(answer), final_number(p.answer))
               and not says_unsolvable(answer), "original_response": answer, "dimensions": {}}
        for inq in p.inquiries:
            expect = BY_NUMBER[inq.dimension].expect
            response = rest[k]; k += 1
            verdict = None if judge_mode == "llm" else rule_judge(expect, _numeric_reference(inq.text, inq.reference), response)
            entry = {"passed": verdict, "judge": "rule", "response": response}
            if verdict is None:
                entry["judge"] = "llm"
                undecided.append((entry, {"inquiry": inq.text, "reference": inq.reference, "response": response,
                                          "expect": expect}))
            rec["dimensions"][str(inq.dimension)] = entry
        records.append(rec)
    judge_params = GenParams(temperature=0.0, max_tokens=4)
    for (entry, _), ok in zip(undecided, llm_judge(judge_backend, [u for _, u in undecided], judge_params)):
        entry["passed"] = ok
    return {"model": backend.model_id, "judge_model": judge_backend.model_id, "problems": records}


def judge_agreement(judge_backend: Any | None) -> dict[str, Any]:
    """Agreement of the rule judge (and of the LLM judge, when given) with the hand labels."""
    items = json.loads(LABELS.read_text())["items"]
    labels = [bool(it["label"]) for it in items]
    rule = [bool(rule_judge(it["expect"], it["reference"], it["response"])) for it in items]
    out = {"rule": cohen_kappa(rule, labels)}
    if judge_backend is not None:
        from jobs.backends.text import GenParams

        # the labelled answers carry no inquiry text: the judge sees the reference and the answer
        llm = llm_judge(judge_backend, [{**it, "inquiry": "(see the reference)"} for it in items],
                        GenParams(temperature=0.0, max_tokens=4))
        out["llm"] = {**cohen_kappa(llm, labels), "model": judge_backend.model_id}
    return out
