"""CogMath's nine dimensions (Liu et al., 2025), grouped by the three stages of problem solving,
with what a passing answer to each inquiry must be, and the prompts of its three agents:

* Inquiry agent: writes the dimension's inquiry from the original problem;
* Judge agent: checks that the inquiry is a valid instance of the dimension (the Inquiry agent
  retries, up to ``max_rounds``, until it passes);
* Reference agent: answers the inquiry, for the dimensions whose inquiry has a new answer (5-9).

``expect`` says how the evaluated model's answer is judged: ``original`` (the original problem's
answer: the inquiry must not change it), ``unsolvable`` (the model must say the inquiry cannot
be answered as posed) or ``reference`` (the Reference agent's answer).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dimension:
    number: int
    key: str
    stage: str
    expect: str
    inquiry_task: str
    """What the Inquiry agent is asked to do with the problem."""
    judge_check: str
    """What the Judge agent verifies about the inquiry."""


DIMENSIONS: tuple[Dimension, ...] = (
    Dimension(1, "paraphrase", "comprehension", "original",
              "Rewrite the problem in different words without changing its meaning, its numbers or its answer.",
              "the rewritten problem keeps every condition and number of the original and has the same answer"),
    Dimension(2, "disruption", "comprehension", "unsolvable",
              "Shuffle the words of the problem so that it no longer reads as a coherent question.",
              "the text is scrambled enough that the question cannot be understood"),
    Dimension(3, "missing_condition", "comprehension", "unsolvable",
              "Remove one condition the solution needs, so that the problem can no longer be solved.",
              "a condition needed for the answer is gone and the problem cannot be solved"),
    Dimension(4, "redundant_condition", "comprehension", "original",
              "Add one condition that is irrelevant to the answer; keep everything else.",
              "the added condition does not change the answer"),
    Dimension(5, "analogical", "solving", "reference",
              "Write an analogous problem: a different scenario solved by the same reasoning.",
              "the new problem is solvable and needs the same reasoning as the original"),
    Dimension(6, "numerical_transformation", "solving", "reference",
              "Change the numbers of the problem (keep the scenario) so that it has a different answer.",
              "only numbers changed and the problem is still consistent and solvable"),
    Dimension(7, "knowledge_redefinition", "solving", "reference",
              "Redefine a concept or operation the problem relies on, state the new definition, and ask the problem under it.",
              "the redefinition is stated clearly and changes how the problem is solved"),
    Dimension(8, "intermediate_step", "summarisation", "reference",
              "Ask a question about an intermediate step or quantity of the problem's solution.",
              "the question is about a step of the original solution and has a definite answer"),
    Dimension(9, "backward_reasoning", "summarisation", "reference",
              "Replace one given number by an unknown x, state the original answer as known, and ask for x.",
              "the unknown can be recovered from the stated answer and equals the original number"),
)
BY_NUMBER = {d.number: d for d in DIMENSIONS}

SOLVER_SYSTEM = ("You are a careful math solver. Solve the problem step by step and end with 'The answer is N.' "
                 "If the problem cannot be solved as stated (a condition is missing or it makes no sense), say so.")

INQUIRY_PROMPT = "Original problem: {problem}\n\nTask: {task}\nWrite only the new problem."
JUDGE_PROMPT = ("Original problem: {problem}\nNew problem: {inquiry}\n\nCheck: {check}.\n"
                "Answer with one word: Yes or No.")
REFERENCE_PROMPT = "{inquiry}"
ANSWER_JUDGE_PROMPT = ("Question: {inquiry}\nReference answer: {reference}\nStudent answer: {response}\n\n"
                       "{criterion} Answer with one word: Yes or No.")
