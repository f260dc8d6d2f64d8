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


class ScriptedAgents:
    """Writes 'draft N' inquiries; the judge rejects every first draft; references say 5."""

    model_id = "fake:agents"

    def __init__(self) -> None:
        self.judged = 0

    def generate(self, prompts: list[str], params: object = None, system: str | None = None) -> list[list[str]]:
        out = []
        for p in prompts:
            if p.startswith("Original problem:") and "Check:" in p:
                self.judged += 1
                out.append(["Yes" if "draft 1" in p else "No"])
            elif p.startswith("Original problem:"):
                out.append([f"draft {params.seed}"])
            else:
                out.append(["The answer is 5."])
        return out


def test_inquiry_judge_reference_agents_retry_until_accepted() -> None:
    from jobs.cogmath.agents import generate_inquiries

    (problem,) = load_problems("generated", 1, 0)
    assert problem.source == "generated" and problem.inquiries == []
    agents = ScriptedAgents()
    inquiries, rounds = generate_inquiries(agents, problem, [1, 3, 6, 9], max_rounds=3)
    assert rounds == {1: 2, 3: 2, 6: 2, 9: 2} and agents.judged == 8
    refs = {i.dimension: i.reference for i in inquiries}
    assert refs == {1: problem.answer, 3: "", 6: "The answer is 5.", 9: "The answer is 5."}
    assert all(i.text == "draft 1" for i in inquiries)
    _, never = generate_inquiries(agents, problem, [2], max_rounds=1)
    assert never == {2: -1}
