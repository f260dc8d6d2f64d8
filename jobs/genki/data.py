"""The knowledge base and the questions of the GenKI job, from the fictional-knowledge documents
(shared/data/papers/fictional_knowledge*.json): invented facts no pretrained model can know.

Each document's ``train_context`` is cut into passages of a few sentences (the knowledge base).
Each document carries five probes: a cloze prefix (``gen_input``, a paraphrase of the document's
wording) and its target (``gen_target``). The probe is the question, the target the gold answer,
and the passage holding the verbatim form of the probe (``mem_input`` + ``mem_target``) its gold
passage. The first ``train_probes`` probes of a document train the retriever and the integration;
the others are held out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Probe:
    doc: int
    index: int
    question: str
    answer: str
    gold: int
    """Index of the gold passage in the knowledge base."""
    train: bool


def data_path(name: str = "fictional_knowledge.json") -> Path:
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "papers" / name


def split_passages(text: str, sentences_per_passage: int) -> list[str]:
    """Consecutive groups of ``sentences_per_passage`` sentences."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]
    return [" ".join(sentences[i:i + sentences_per_passage]) for i in range(0, len(sentences), sentences_per_passage)]


def gold_passage(passages: list[str], verbatim: str, answer: str) -> int | None:
    """The passage holding the probe's verbatim sentence end and its answer; else the first that
    holds the answer; None when no passage does."""
    tail = " ".join(verbatim.split()[-6:]).lower()
    for i, p in enumerate(passages):
        if tail in p.lower() and answer.lower() in p.lower():
            return i
    return next((i for i, p in enumerate(passages) if answer.lower() in p.lower()), None)


def load_knowledge(docs: int, sentences_per_passage: int, train_probes: int, paraphrases: int,
                   path: Path | None = None) -> tuple[list[str], list[int], list[Probe], list[str]]:
    """(passages, the document of each passage, probes, paraphrased documents for integration)."""
    path = path or data_path("fictional_knowledge_paraphrased.json")
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the GenKI job reads the fictional-knowledge documents "
                                "from shared/data/papers/ beside the checkout")
    items = json.loads(path.read_text())[:docs or None]
    passages: list[str] = []
    passage_doc: list[int] = []
    probes: list[Probe] = []
    extra: list[str] = []
    for d, item in enumerate(items):
        own = split_passages(item["train_context"], sentences_per_passage)
        offset = len(passages)
        passages += own
        passage_doc += [d] * len(own)
        extra += list(item.get("paraphrases", []))[:paraphrases]
        for j, (mem_in, mem_out, q, a) in enumerate(zip(item["mem_input"], item["mem_target"],
                                                        item["gen_input"], item["gen_target"])):
            g = gold_passage(own, mem_in, mem_out)
            if g is not None:
                probes.append(Probe(d, j, q, a, offset + g, j < train_probes))
    return passages, passage_doc, probes, extra
