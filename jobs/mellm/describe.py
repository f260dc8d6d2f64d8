"""FACS-style descriptions of a micro-expression, and reading the action units back out of one.

``describe`` turns action units (and an emotion) into the kind of text MELLM's instruction data
pairs with each sample; ``instruction_pairs`` builds those (instruction, description) pairs from
the labels; ``parse_action_units`` recovers the units a description names, so the per-AU F1 of
any describer -- this template over a network's AU predictions, or a language model -- is scored
the same way."""

from __future__ import annotations

import re

import numpy as np

from jobs.faces.render import AU_NAMES, AUS

INSTRUCTION = ("Describe the facial muscle movements between the onset and apex frames using FACS action units, "
               "then name the micro-expression's emotion (negative, positive or surprise).")


def describe(active: list[str], emotion: str | None = None) -> str:
    if active:
        units = "; ".join(f"{au} ({AU_NAMES[au]})" for au in active)
        text = f"A brief, subtle movement is visible: {units}."
    else:
        text = "No clear facial muscle movement is visible."
    return text + (f" Emotion: {emotion}." if emotion else "")


def instruction_pairs(aus: np.ndarray, emotions: list[str]) -> list[dict[str, str]]:
    """The (instruction, description) pairs of a labelled set: ``aus`` (N, len(AUS)) > 0 is active."""
    return [{"instruction": INSTRUCTION, "description": describe([AUS[j] for j in np.flatnonzero(row > 0)], emo)}
            for row, emo in zip(aus, emotions)]


def parse_action_units(text: str) -> np.ndarray:
    """(len(AUS),) 0/1: the units a description names as 'AU<n>'."""
    named = {f"AU{m}" for m in re.findall(r"\bAU\s?(\d+)\b", text, flags=re.IGNORECASE)}
    return np.array([1.0 if au in named else 0.0 for au in AUS])
