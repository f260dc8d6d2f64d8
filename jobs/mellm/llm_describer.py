"""The language-model describer: the onset-apex optical flow summarised per facial region as text
("inner brows: up 0.6 px; left mouth corner: up and outward 0.4 px"), a few FACS-style
instruction-description pairs of other subjects as examples, and the shared text backend writes
the description; the action units and the emotion are read back out of it.

MELLM fine-tunes a vision-language model on the colour map itself; a CPU cannot, so this keeps
the paper's idea -- motion evidence in, FACS reasoning out -- with in-context examples instead of
fine-tuning and region cues instead of pixels. Regions assume an aligned, centred face (the
generated faces; CASME II's cropped faces)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from jobs.mellm.describe import INSTRUCTION, describe

REGIONS: dict[str, tuple[float, float, float, float]] = {
    # name: (top, bottom, left, right) as fractions of the image
    "left outer brow": (0.2, 0.36, 0.18, 0.38), "inner brows": (0.2, 0.36, 0.38, 0.62),
    "right outer brow": (0.2, 0.36, 0.62, 0.82), "eyes": (0.36, 0.48, 0.2, 0.8), "nose": (0.46, 0.62, 0.4, 0.6),
    "left mouth corner": (0.62, 0.84, 0.22, 0.4), "lips": (0.62, 0.84, 0.4, 0.6),
    "right mouth corner": (0.62, 0.84, 0.6, 0.78),
}
SYSTEM = "You are an expert FACS coder of facial micro-expressions. Answer in one short paragraph."


def motion_cues(flow: np.ndarray, min_px: float = 0.08) -> str:
    """Per-region mean motion of a (H, W, 2) flow as words; regions with little motion are left out."""
    h, w = flow.shape[:2]
    parts, strength = [], {}
    for name, (t, b, left, r) in REGIONS.items():
        region = flow[int(t * h):int(b * h), int(left * w):int(r * w)].reshape(-1, 2)
        dx, dy = region.mean(0)
        strength[name] = (float(np.linalg.norm(region, axis=1).mean()), float(dx), float(dy))
    top = max(s[0] for s in strength.values())
    for name, (mag, dx, dy) in strength.items():
        if mag < max(min_px, 0.35 * top):
            continue
        words = []
        if abs(dy) > 0.3 * mag:
            words.append("up" if dy < 0 else "down")
        if abs(dx) > 0.3 * mag:
            centre = (REGIONS[name][2] + REGIONS[name][3]) / 2
            outward = (dx < 0) == (centre < 0.5)
            words.append(("outward" if outward else "inward") if abs(centre - 0.5) > 0.05 else ("left" if dx < 0 else "right"))
        parts.append(f"{name}: {' and '.join(words) or 'deforms in place'} {mag:.1f} px")
    return "; ".join(parts) if parts else "no visible motion"


def prompt(cues: str, examples: list[tuple[str, str]]) -> str:
    shots = "\n\n".join(f"Motion: {c}\nDescription: {d}" for c, d in examples)
    return (f"{INSTRUCTION} Answer in the format of the examples.\n\n{shots}\n\nMotion: {cues}\nDescription:")


def parse_emotion(text: str, classes: list[str]) -> int | None:
    """The first class name the text uses after the word 'emotion' (anywhere when it has none)."""
    lower = text.lower()
    after = lower[lower.find("emotion"):] if "emotion" in lower else lower
    return next((classes.index(w) for w in re.findall(r"\w+", after) if w in classes), None)


def llm_describe(flows: np.ndarray, y: np.ndarray, aus: np.ndarray, folds: np.ndarray, classes: list[str],
                 samples: int, shots: int, max_tokens: int, seed: int, progress: Any = iter,
                 spec: str | None = None) -> dict[str, Any]:
    """Describe ``samples`` test samples (spread over the folds) with the text backend; examples
    come from other folds, one per class in turn. Returns the texts, indices and backend id."""
    from jobs.backends.text import GenParams, text_backend
    from jobs.faces.render import AUS

    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(y))[:samples]
    cues = [motion_cues(f) for f in flows]
    prompts = []
    for i in pick:
        pool = [j for j in rng.permutation(len(y)) if folds[j] != folds[i]]
        chosen: list[int] = []
        for k in range(len(classes)):
            chosen += [j for j in pool if y[j] == k][:1]
        chosen = (chosen + [j for j in pool if j not in chosen])[:shots]
        rng.shuffle(chosen)
        examples = [(cues[j], describe([AUS[a] for a in np.flatnonzero(aus[j] > 0)], classes[y[j]])) for j in chosen]
        prompts.append(prompt(cues[i], examples))
    backend = text_backend(spec)
    params = GenParams(max_tokens=max_tokens, stop=("\n\n",), seed=seed)
    texts: list[str] = []
    for start in progress(range(0, len(prompts), 8)):
        # a small model often echoes the example pattern ("Motion: ...\nDescription: ..."): keep the description
        texts += [out[0].split("Description:")[-1].strip()
                  for out in backend.generate(prompts[start:start + 8], params, system=SYSTEM)]
    return {"index": pick.tolist(), "texts": texts, "cues": [cues[i] for i in pick], "model": backend.model_id}
