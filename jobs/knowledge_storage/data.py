"""Synthetic individuals, their biographies (pretraining) and question-answer pairs (fine-tuning).

The setting of the paper (after Allen-Zhu & Li's bioS): each individual has one name token and
one value per relation; a biography names the individual once, then states every relation in a
random order, each sentence drawn from one of `templates` phrasings of its relation:

    <name> [tmpl_r,k tokens] <value_r> <.> [tmpl_r',k' tokens] <value_r'> <.> ...

`multiplicity` is the number of distinct biographies (independent order and template draws) of
each individual in the pretraining corpus. All relations take values from one shared pool (all
are places: born in, studied in, works in, lives in), so the answer is a function of the
(individual, relation) pair jointly: no additive per-token association can produce it. Fine-tuning
data are questions `<Q> <name> <ask_r> -> <value_r>` over a subset of the individuals; the test
asks the same questions about individuals seen only in pretraining (out of distribution for the
fine-tuning).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RELATIONS = ("birth city", "study city", "work city", "home city")


@dataclass(frozen=True)
class Vocab:
    """Token id layout: pad, '.', '<Q>', ask_r per relation, template tokens, values, names."""
    n_individuals: int
    n_values: int
    n_relations: int
    templates: int
    template_len: int

    pad: int = 0
    dot: int = 1
    q: int = 2

    def ask(self, r: int) -> int:
        return 3 + r

    def template_token(self, r: int, k: int, j: int) -> int:
        return 3 + self.n_relations + (r * self.templates + k) * self.template_len + j

    @property
    def _values0(self) -> int:
        return 3 + self.n_relations + self.n_relations * self.templates * self.template_len

    def value(self, v: int) -> int:
        return self._values0 + v

    def name(self, i: int) -> int:
        return self._values0 + self.n_values + i

    @property
    def size(self) -> int:
        return self.name(self.n_individuals)


@dataclass
class World:
    vocab: Vocab
    facts: np.ndarray  # (n_individuals, n_relations) value index of each fact

    @classmethod
    def sample(cls, n_individuals: int, n_values: int, n_relations: int, templates: int, template_len: int,
               rng: np.random.Generator) -> "World":
        if n_relations > len(RELATIONS):
            raise ValueError(f"at most {len(RELATIONS)} relations")
        vocab = Vocab(n_individuals, n_values, n_relations, templates, template_len)
        return cls(vocab, rng.integers(0, n_values, size=(n_individuals, n_relations)))

    def biography(self, i: int, rng: np.random.Generator) -> list[int]:
        v = self.vocab
        seq = [v.name(i)]
        for r in rng.permutation(v.n_relations):
            k = int(rng.integers(v.templates))
            seq += [v.template_token(int(r), k, j) for j in range(v.template_len)]
            seq += [v.value(int(self.facts[i, r])), v.dot]
        return seq

    def corpus(self, multiplicity: int, rng: np.random.Generator) -> np.ndarray:
        """`multiplicity` independently drawn biographies of every individual, (N * m, length)."""
        return np.asarray([self.biography(i, rng) for i in range(self.vocab.n_individuals)
                           for _ in range(multiplicity)], dtype=np.int64)

    def value_positions(self) -> np.ndarray:
        """Positions (in the input, predicting the next token) whose target is a value token."""
        v = self.vocab
        step = v.template_len + 2
        return np.asarray([s * step + v.template_len for s in range(v.n_relations)], dtype=np.int64)

    def qa(self, individuals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Questions `<Q> <name> <ask_r>` and their answer tokens for every relation of each individual."""
        v = self.vocab
        prompts = [[v.q, v.name(int(i)), v.ask(r)] for i in individuals for r in range(v.n_relations)]
        answers = [v.value(int(self.facts[i, r])) for i in individuals for r in range(v.n_relations)]
        return np.asarray(prompts, dtype=np.int64), np.asarray(answers, dtype=np.int64)


def biography_entropy(n_relations: int, templates: int, template_len: int) -> float:
    """Bayes-optimal next-token loss (nats per predicted token) on a fresh biography of a known individual.

    Only the first template token of each sentence is uncertain: it reveals which of the remaining
    relations comes next and which phrasing, log(remaining * templates) nats; every other token is
    determined (template continuation, the stored value, the full stop). Distinct templates start
    with distinct tokens, so this is exact.
    """
    total = sum(math.log(k * templates) for k in range(1, n_relations + 1))
    predicted = n_relations * (template_len + 2)  # every token after the name
    return total / predicted
