"""ComoRAG's hierarchical knowledge source over a narrative ("ComoRAG: A
Cognitive-Inspired Memory-Organized RAG for Stateful Long Narrative Reasoning", 2025):

* veridical layer: the raw chunks, plus knowledge triples the model extracts from each chunk
  (each triple keeps its source chunk);
* semantic layer: chunks clustered by their embeddings (a Gaussian mixture, as RAPTOR-style
  summarisation does), each cluster summarised by the model;
* episodic layer: a timeline -- summaries of a sliding window of consecutive chunks, in story order.

Every unit records the chunks it came from, so evidence recall is measured on chunks whichever
layer retrieved it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Unit:
    layer: str
    text: str
    sources: list[int] = field(default_factory=list)


def data_dir() -> Path:
    from jobs.runner import REPO_ROOT

    return REPO_ROOT.parent / "shared" / "data" / "papers" / "cinderella"


def load_story(path: Path) -> tuple[str, list[dict]]:
    """The story text and its questions (``golden_answers``: accepted short answers)."""
    story, qas = path / "cinderella.txt", path / "qas.jsonl"
    if not story.exists() or not qas.exists():
        raise FileNotFoundError(f"{path}: cinderella.txt and qas.jsonl are expected there (shared/data/papers/ "
                                "beside the checkout, see SOURCES.md), or set data_dir")
    questions = [json.loads(line) for line in qas.read_text().splitlines() if line.strip()]
    return story.read_text(), questions


def chunk_story(text: str, chunk_chars: int) -> list[str]:
    """Paragraph-respecting chunks of about ``chunk_chars`` characters, in story order."""
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    chunks, current = [], ""
    for sentence in sentences:
        if current and len(current) + len(sentence) > chunk_chars:
            chunks.append(current.strip())
            current = ""
        current += sentence + " "
    if current.strip():
        chunks.append(current.strip())
    return chunks


def parse_triples(text: str) -> list[str]:
    """``(subject; relation; object)`` lines -> "subject relation object" strings."""
    out = []
    for m in re.finditer(r"\(([^;()]+);([^;()]+);([^;()]+)\)", text):
        out.append(" ".join(part.strip() for part in m.groups()))
    return out


def build_layers(chunks: list[str], backend, emb, cfg, seed: int = 0) -> list[Unit]:
    from jobs.backends import GenParams

    units = [Unit("veridical", c, [i]) for i, c in enumerate(chunks)]
    prompts = [f"Passage:\n{c}\n\nList up to five facts from the passage, one per line, written exactly like "
               "(Cinderella; lives with; her stepmother)" for c in chunks]
    for i, out in enumerate(backend.generate(prompts, GenParams(max_tokens=cfg.triple_tokens))):
        units += [Unit("triple", t, [i]) for t in parse_triples(out[0])]
    vecs = emb.encode(chunks)
    n_clusters = max(1, min(cfg.semantic_clusters, len(chunks)))
    if n_clusters > 1:
        from sklearn.mixture import GaussianMixture

        labels = GaussianMixture(n_clusters, random_state=seed, covariance_type="diag").fit_predict(vecs)
    else:
        labels = np.zeros(len(chunks), dtype=int)
    groups = [np.flatnonzero(labels == c).tolist() for c in sorted(set(labels.tolist()))]
    prompts = ["Summarize the main characters and events of these passages in two sentences.\n\n"
               + "\n".join(chunks[i] for i in g)[:cfg.summary_input_chars] for g in groups]
    for g, out in zip(groups, backend.generate(prompts, GenParams(max_tokens=cfg.summary_tokens))):
        units.append(Unit("semantic", out[0], g))
    windows = [list(range(s, min(s + cfg.episode_window, len(chunks))))
               for s in range(0, len(chunks), max(1, cfg.episode_window - 1))]
    prompts = ["Tell what happens in this part of the story, in order, in two sentences.\n\n"
               + "\n".join(chunks[i] for i in w)[:cfg.summary_input_chars] for w in windows]
    for pos, (w, out) in enumerate(zip(windows, backend.generate(prompts, GenParams(max_tokens=cfg.summary_tokens)))):
        units.append(Unit("episodic", f"[Part {pos + 1}] {out[0]}", w))
    return units
