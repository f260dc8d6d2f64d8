"""The generated visual-perception task that stands in for Perception-R1's multimodal problems.

No vision-language model runs on this machine, so the job uses an honest small substitute: a
figure is a 12x12 RGB grid with red, blue and (distractor) green 2x2 squares at random cells;
the question is either "are there more red than blue squares?" (yes/no) or "how many red and
blue squares in all?" (a digit). Each figure carries its visual annotations -- the facts a
correct solution must perceive ("red=3", "blue=1") -- exactly as the paper's annotations list
the visual facts of a problem. A response is a token sequence in the paper's two-part format,
perception first, then the answer:

    <p> R B </p> <a> ANSWER </a> <eos>        (R, B: the counts the policy says it sees)

Rewards (the paper's three): accuracy (the answer is right), format (the response parses), and
the visual-perception reward: the share of annotations the response states correctly. The paper
asks an LLM judge whether each annotation is consistent with the response; the annotations here
are structured facts, so the judge is rule-based (exact match of each stated count).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DIGITS = [str(d) for d in range(10)]
VOCAB = DIGITS + ["yes", "no", "<p>", "</p>", "<a>", "</a>", "<eos>", "<bos>"]
TOK = {t: i for i, t in enumerate(VOCAB)}
EOS, BOS = TOK["<eos>"], TOK["<bos>"]
QUESTIONS = ("compare", "sum")
GRID, CELL, MAX_COUNT, MAX_GREEN = 6, 2, 4, 3
COLOURS = {"red": (1.0, 0.0, 0.0), "blue": (0.0, 0.0, 1.0), "green": (0.0, 1.0, 0.0)}


@dataclass
class Problems:
    images: torch.Tensor        # [N, 3, 12, 12]
    questions: torch.Tensor     # [N] index into QUESTIONS
    red: torch.Tensor           # [N] annotation: number of red squares
    blue: torch.Tensor          # [N] annotation: number of blue squares
    answers: list[str]

    def __len__(self) -> int:
        return len(self.answers)

    def take(self, idx: torch.Tensor) -> "Problems":
        return Problems(self.images[idx], self.questions[idx], self.red[idx], self.blue[idx],
                        [self.answers[int(i)] for i in idx])


def answer_for(question: str, red: int, blue: int) -> str:
    return ("yes" if red > blue else "no") if question == "compare" else str(red + blue)


def make_problems(n: int, seed: int) -> Problems:
    """``n`` figures with their questions, annotations and answers (compare questions never tie)."""
    rng = np.random.default_rng(seed)
    size = GRID * CELL
    images = np.zeros((n, 3, size, size), dtype=np.float32)
    qs, reds, blues, answers = [], [], [], []
    for i in range(n):
        q = int(rng.integers(len(QUESTIONS)))
        while True:
            red, blue = (int(x) for x in rng.integers(0, MAX_COUNT + 1, size=2))
            if QUESTIONS[q] == "sum" or red != blue:
                break
        green = int(rng.integers(0, MAX_GREEN + 1))
        cells = rng.choice(GRID * GRID, size=red + blue + green, replace=False)
        colours = ["red"] * red + ["blue"] * blue + ["green"] * green
        for cell, colour in zip(cells, colours):
            r, c = divmod(int(cell), GRID)
            images[i, :, r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = np.asarray(COLOURS[colour])[:, None, None]
        qs.append(q); reds.append(red); blues.append(blue); answers.append(answer_for(QUESTIONS[q], red, blue))
    return Problems(torch.from_numpy(images), torch.tensor(qs), torch.tensor(reds), torch.tensor(blues), answers)


def reference_response(red: int, blue: int, answer: str) -> list[int]:
    """The caption-style target of the supervised warm start (correct perception, then answer)."""
    words = ["<p>", str(red), str(blue), "</p>", "<a>", answer, "</a>", "<eos>"]
    return [TOK[w] for w in words]


def parse(tokens: list[int]) -> dict | None:
    """The response's stated counts and answer, or None when it does not follow the format."""
    words = [VOCAB[t] for t in tokens]
    if "<eos>" in words:
        words = words[:words.index("<eos>")]
    else:
        return None
    if len(words) != 7 or words[0] != "<p>" or words[3] != "</p>" or words[4] != "<a>" or words[6] != "</a>":
        return None
    if words[1] not in DIGITS or words[2] not in DIGITS or words[5] in ("<p>", "</p>", "<a>", "</a>", "<bos>"):
        return None
    return {"red": int(words[1]), "blue": int(words[2]), "answer": words[5]}


def rewards(tokens: list[int], red: int, blue: int, answer: str) -> dict[str, float]:
    """Accuracy, format and visual-perception rewards of one response (each in [0, 1])."""
    parsed = parse(tokens)
    if parsed is None:
        return {"accuracy": 0.0, "format": 0.0, "perception": 0.0, "perception_all": 0.0}
    judged = [parsed["red"] == red, parsed["blue"] == blue]   # one judgement per annotation
    return {"accuracy": float(parsed["answer"] == answer), "format": 1.0,
            "perception": sum(judged) / len(judged), "perception_all": float(all(judged))}
