"""The problems CogMath evaluates and their nine inquiries.

* ``published``: the paper's own inquiries (shared data ``papers/cogmath/example_data_first3.json``,
  the first three items of the official example file) with their GSM8K originals (originals.json).
  Dimensions 1-4 carry no reference (they expect the original answer or a refusal).
* ``templated``: generated arithmetic word problems whose nine inquiries are built by rule, so
  every reference answer is exact. This stands in for the Inquiry and Reference agents when no
  capable model is reachable (a 135M-parameter model cannot write valid inquiries); with an
  endpoint the job can generate inquiries with the agents instead (``generated``,
  jobs/cogmath/agents.py).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from jobs.cogmath.dimensions import BY_NUMBER
from jobs.reasoning import PAPERS_DIR

HERE = Path(__file__).resolve().parent


@dataclass
class Inquiry:
    dimension: int
    text: str
    reference: str
    """The answer a pass must match ('' where the dimension expects a refusal)."""


@dataclass
class Problem:
    id: str
    text: str
    answer: str
    source: str
    inquiries: list[Inquiry] = field(default_factory=list)


def load_published(path: Path | None = None) -> list[Problem]:
    path = path or (PAPERS_DIR / "cogmath" / "example_data_first3.json")
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: CogMath's published inquiries are read from the shared papers data "
                                "(set inquiries to 'templated' to run without it)")
    data = json.loads(path.read_text())
    originals = json.loads((HERE / "originals.json").read_text())
    problems = []
    for pid, dims in data.items():
        if pid not in originals:
            raise ValueError(f"{pid}: no original problem in originals.json")
        orig = originals[pid]
        inquiries = []
        for name, item in sorted(dims.items(), key=lambda kv: int(kv[0].split()[-1])):
            number = int(name.split()[-1])
            expect = BY_NUMBER[number].expect
            reference = {"original": orig["answer"], "unsolvable": ""}.get(expect, item.get("inquiry answer", ""))
            inquiries.append(Inquiry(number, item["inquiry"], reference))
        problems.append(Problem(pid, orig["problem"], orig["answer"], "published", inquiries))
    return problems


NAMES = ["Maya", "Omar", "Lena", "Ravi", "Sofia", "Tom", "Aiko", "Ben"]
ITEMS = [("apples", "a market"), ("stickers", "a shop"), ("marbles", "a fair"), ("books", "a sale")]


def _shuffle_words(text: str, rng: random.Random) -> str:
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


def templated_problem(index: int, seed: int) -> Problem:
    """A two-step problem 'has a, buys b packs of p, gives away c' and its nine inquiries."""
    rng = random.Random(seed * 7919 + index)
    name, other = rng.sample(NAMES, 2)
    (item, place), (item2, place2) = rng.sample(ITEMS, 2)
    a, b, p, c = rng.randint(5, 30), rng.randint(2, 6), rng.randint(2, 9), rng.randint(1, 5)
    s1 = f"{name} has {a} {item}."
    s2 = f"At {place}, {name} buys {b} packs of {item} with {p} {item} in each pack."
    s3 = f"Then {name} gives {c} {item} to a friend."
    q = f"How many {item} does {name} have now?"
    text = " ".join([s1, s2, s3, q])
    answer = a + b * p - c
    a2, b2, p2, c2 = a + rng.randint(1, 9), b + 1, p + rng.randint(1, 3), c + rng.randint(1, 3)
    a3, b3, p3, c3 = rng.randint(5, 30), rng.randint(2, 6), rng.randint(2, 9), rng.randint(1, 5)
    inquiries = [
        Inquiry(1, f"{name} starts with {a} {item}. {name} then purchases {b} packs at {place}, each holding {p} {item}, "
                   f"and afterwards hands {c} {item} to a friend. What is the number of {item} {name} ends up with?", str(answer)),
        Inquiry(2, _shuffle_words(text, rng), ""),
        Inquiry(3, " ".join([s1, f"At {place}, {name} buys {b} packs of {item}.", s3, q]), ""),
        Inquiry(4, " ".join([s1, s2, f"{other} has {rng.randint(3, 40)} {item2} at home.", s3, q]), str(answer)),
        Inquiry(5, f"{other} has {a3} {item2}. At {place2}, {other} buys {b3} packs of {item2} with {p3} {item2} in each "
                   f"pack. Then {other} gives {c3} {item2} to a friend. How many {item2} does {other} have now?",
                str(a3 + b3 * p3 - c3)),
        Inquiry(6, " ".join([f"{name} has {a2} {item}.", f"At {place}, {name} buys {b2} packs of {item} with {p2} {item} "
                            f"in each pack.", f"Then {name} gives {c2} {item} to a friend.", q]), str(a2 + b2 * p2 - c2)),
        Inquiry(7, f"Suppose that 'giving {item} to a friend' now means giving away twice the stated number. {text}",
                str(a + b * p - 2 * c)),
        Inquiry(8, f"{s1} {s2} {s3} How many {item} does {name} have right after buying the packs, before giving "
                   "any away?",
                str(a + b * p)),
        Inquiry(9, f"In the problem \"{name} has x {item}. {s2} {s3} {q}\", {name} ends with {answer} {item}. "
                   f"What is the value of x?", str(a)),
    ]
    return Problem(f"templated_{index}", text, str(answer), "templated", inquiries)


def load_problems(source: str, templated: int, seed: int) -> list[Problem]:
    """published, templated, generated, or a mix ('published+templated'). ``generated`` problems
    are the templated originals with no inquiries yet (the agents write them)."""
    parts = source.split("+")
    unknown = set(parts) - {"published", "templated", "generated"}
    if unknown:
        raise ValueError(f"inquiries must be published, templated and/or generated joined by '+', got {source!r}")
    problems = load_published() if "published" in parts else []
    if "templated" in parts:
        problems += [templated_problem(i, seed) for i in range(templated)]
    if "generated" in parts:
        for i in range(templated):
            p = templated_problem(i, seed)
            problems.append(Problem(f"generated_{i}", p.text, p.answer, "generated", []))
    return problems
