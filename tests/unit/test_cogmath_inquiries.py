"""CogMath's inquiries and rule judging, without a model: the nine dimensions of published and
templated problems, numeric and refusal judging, and the rule judge against the hand labels."""

from __future__ import annotations

import json

import pytest

from jobs.cogmath.analysis import summarize_model
from jobs.cogmath.dimensions import DIMENSIONS
from jobs.cogmath.evaluate import LABELS
from jobs.cogmath.judge import final_number, rule_judge
from jobs.cogmath.problems import load_problems, templated_problem
from jobs.reasoning import PAPERS_DIR
from jobs.reasoning.stats import cohen_kappa


def test_nine_dimensions_over_three_stages() -> None:
    assert [d.number for d in DIMENSIONS] == list(range(1, 10))
    assert [d.stage for d in DIMENSIONS].count("comprehension") == 4
    assert {d.key for d in DIMENSIONS if d.expect == "unsolvable"} == {"disruption", "missing_condition"}


@pytest.mark.skipif(not (PAPERS_DIR / "cogmath").exists(), reason="shared/data/papers/cogmath not beside the checkout")
def test_published_inquiries_load_with_references() -> None:
    problems = load_problems("published", 0, 0)
    assert [p.id for p in problems] == ["GSM8K_0", "GSM8K_1", "GSM8K_2"]
    janet = problems[0]
    refs = {i.dimension: i.reference for i in janet.inquiries}
    assert refs[1] == refs[4] == "18" and refs[2] == refs[3] == ""
    assert final_number(refs[6]) == 22 and final_number(refs[9]) == 3
    assert final_number(problems[2].inquiries[8].reference) == 50000


def test_templated_references_are_exact() -> None:
    p = templated_problem(0, seed=0)
    start = int(p.text.split(" has ")[1].split()[0])
    assert len(p.inquiries) == 9 and int(p.inquiries[8].reference) == start      # backward: x is the start
    assert p.inquiries[0].reference == p.inquiries[3].reference == p.answer      # paraphrase, redundant
    assert int(p.inquiries[6].reference) < int(p.answer)                          # giving away twice as many
    assert " in each pack" in p.text and " in each pack" not in p.inquiries[2].text   # the condition is gone


def test_rule_judge() -> None:
    assert rule_judge("original", "18", "9 eggs * $2 = $18. The answer is 18.")
    assert rule_judge("original", "70000", "Profit: $70,000")
    assert not rule_judge("original", "18", "I cannot tell, maybe 18")
    assert rule_judge("unsolvable", "", "The number of eggs is not given, so it cannot be solved.")
    assert not rule_judge("unsolvable", "", "The answer is 18.")
    assert rule_judge("reference", "an explanation without a number", "anything") is None


def test_rule_judge_agrees_with_most_hand_labels_but_not_all() -> None:
    items = json.loads(LABELS.read_text())["items"]
    rule = [bool(rule_judge(it["expect"], it["reference"], it["response"])) for it in items]
    out = cohen_kappa(rule, [it["label"] for it in items])
    assert len(items) >= 25 and 0.8 < out["agreement"] < 1.0 and out["kappa"] > 0.7


def test_mastery_needs_every_inquiry() -> None:
    ev = {"model": "m", "problems": [
        {"original_correct": True, "dimensions": {"1": {"passed": True, "judge": "rule"}, "2": {"passed": False, "judge": "rule"}}},
        {"original_correct": True, "dimensions": {"1": {"passed": True, "judge": "rule"}, "2": {"passed": True, "judge": "llm"}}},
        {"original_correct": False, "dimensions": {"1": {"passed": True, "judge": "rule"}, "2": {"passed": True, "judge": "rule"}}},
    ]}
    s = summarize_model(ev)
    assert s["accuracy"]["k"] == 2 and s["mastery"]["k"] == 1 and s["overestimation"] == pytest.approx(0.5)
    assert s["dimensions"]["2"]["k"] == 2 and s["judged_by_llm"] == 1
