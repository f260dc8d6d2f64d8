"""O²-Searcher's rewards as pure functions: exact match, format, Hungarian-matched findings F1,
query diversity."""

from __future__ import annotations

import numpy as np

from jobs.o2_searcher import rewards as R


def _unit(rows: list[list[float]]) -> np.ndarray:
    a = np.asarray(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_exact_match_normalises_like_squad() -> None:
    assert R.exact_match("The Mars–Ganymede Pact.", ["the Mars–Ganymede Pact"]) == 1.0
    assert R.exact_match("Ganymede", ["Ganymede and Callisto"]) == 0.0
    assert R.exact_match(None, ["x"]) == 0.0


def test_format_reward_wants_only_protocol_tags_and_one_final_answer() -> None:
    good = "<think>need facts</think><search>edge computing latency</search><answer>- lowers latency</answer>"
    assert R.format_reward(good, open_ended=True) == 1.0
    assert R.format_reward("<answer>Callisto</answer>", open_ended=False) == 1.0
    assert R.format_reward("<answer>Callisto</answer>", open_ended=True) == 0.0        # open answers list findings
    assert R.format_reward("I think <answer>Callisto</answer>", open_ended=False) == 0.0
    assert R.format_reward("<answer>a</answer><answer>b</answer>", open_ended=False) == 0.0
    assert R.extract_queries("<search>a b; c\nd</search> x <search>e</search>") == ["a b", "c", "d", "e"]
    assert R.extract_findings("- one\n- two\nnoise") == ["one", "two"]


def test_findings_f1_is_one_to_one_and_thresholded() -> None:
    ref = _unit([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    # two predictions near the same reference finding: Hungarian lets only one of them match
    pred = _unit([[1, 0.05, 0], [1, 0.1, 0]])
    assert R.matched_findings(pred @ ref.T, 0.9) == 1
    p, r = 1 / 2, 1 / 3
    assert np.isclose(R.findings_f1(pred, ref, 0.9), 2 * p * r / (p + r))
    assert R.findings_f1(ref, ref, 0.9) == 1.0
    assert R.findings_f1(_unit([[1, 1, 1]]), ref, 0.9) == 0.0                       # below threshold
    assert R.findings_f1(np.zeros((0, 3)), ref, 0.9) == 0.0


def test_query_diversity() -> None:
    assert R.query_diversity(_unit([[1, 0], [1, 0]])) == 0.0
    assert np.isclose(R.query_diversity(_unit([[1, 0], [0, 1]])), 1.0)
    assert R.query_diversity(_unit([[1, 0]])) == 0.0
