"""The locally simulated search environment of O²-Searcher and its questions.

The paper's agent searches the web (and, for training, a local knowledge base); here every
search goes to a local cached corpus, retrieved by BM25 and MiniLM embeddings fused by
reciprocal rank (``hybrid``), or by either alone:

* open-ended questions: ``o2qa_train_gt.json`` / ``o2qa_test_gt.json`` (question -> reference key
  findings); the corpus holds every key finding of both splits as a document (the pages the
  findings were distilled from are not published), so a search can surface the findings of the
  asked question among thousands of others;
* closed-ended questions: the Fictional Knowledge documents (no model knows them): the corpus
  holds their passages, a question is a paraphrased cloze sentence and its gold answer the
  missing phrase, so only a search can answer it.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

from jobs.reasoning import PAPERS_DIR


@dataclass
class Question:
    text: str
    open_ended: bool
    golds: list[str] = field(default_factory=list)
    """Closed-ended: the accepted answers. Open-ended: the reference key findings."""


def load_open(split: str, limit: int | None = None) -> list[Question]:
    path = PAPERS_DIR / f"o2qa_{split}_gt.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: O²-Searcher's open-ended questions come from the shared papers data")
    data = json.loads(path.read_text())
    items = [Question(q, True, list(findings)) for q, findings in data.items()]
    return items[:limit] if limit else items


def _passages(text: str, sentences: int = 2) -> list[str]:
    parts = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    return [" ".join(parts[i:i + sentences]) for i in range(0, len(parts), sentences)]


def load_closed(limit: int | None, seed: int) -> tuple[list[Question], list[str]]:
    """Cloze questions over the Fictional Knowledge documents, and the documents' passages."""
    path = PAPERS_DIR / "fictional_knowledge.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the closed-ended questions come from the shared papers data")
    items = json.loads(path.read_text())
    passages = [p for it in items for p in _passages(it["train_context"])]
    questions = [Question(f"Complete the sentence: {inp} ...", False, [tgt])
                 for it in items for inp, tgt in zip(it["gen_input"], it["gen_target"])]
    random.Random(seed).shuffle(questions)
    return (questions[:limit] if limit else questions), passages


class SearchEnv:
    """search(queries) -> the top-k documents per query, formatted for the agent's context."""

    def __init__(self, corpus: list[str], mode: str = "hybrid", k: int = 3, embedder: Any = None) -> None:
        from jobs.backends.embed import bm25_index, vector_index

        if mode not in ("bm25", "dense", "hybrid"):
            raise ValueError(f"retrieval mode must be bm25, dense or hybrid, got {mode!r}")
        self.corpus, self.mode, self.k = corpus, mode, k
        self.bm25 = bm25_index(corpus) if mode != "dense" else None
        self.embedder = embedder
        self.vectors = vector_index(embedder.encode(corpus)) if mode != "bm25" else None

    def search(self, queries: list[str]) -> list[list[int]]:
        if not queries:
            return []
        depth = self.k * 4
        ranked: list[dict[int, float]] = [dict() for _ in queries]
        if self.bm25 is not None:
            ids, _ = self.bm25.search(queries, depth)
            for r, row in zip(ranked, ids):
                for rank, i in enumerate(row):
                    if i >= 0:
                        r[int(i)] = r.get(int(i), 0.0) + 1.0 / (60 + rank)
        if self.vectors is not None:
            ids, _ = self.vectors.search(self.embedder.encode(queries), depth)
            for r, row in zip(ranked, ids):
                for rank, i in enumerate(row):
                    if i >= 0:
                        r[int(i)] = r.get(int(i), 0.0) + 1.0 / (60 + rank)
        return [sorted(r, key=lambda i: -r[i])[:self.k] for r in ranked]

    def retrieve(self, queries: list[str]) -> list[int]:
        """The documents one search call returns: each query's top k, in order, without repeats."""
        seen: list[int] = []
        for hits in self.search(queries):
            seen += [i for i in hits if i not in seen]
        return seen

    def information(self, queries: list[str]) -> str:
        docs = "\n".join(f"[{n + 1}] {self.corpus[i]}" for n, i in enumerate(self.retrieve(queries)))
        return f"<information>\n{docs}\n</information>"


def build_env(open_train: list[Question], open_test: list[Question], closed_passages: list[str], mode: str, k: int,
              embedder: Any) -> SearchEnv:
    corpus = [f for q in open_train + open_test for f in q.golds] + closed_passages
    return SearchEnv(list(dict.fromkeys(corpus)), mode=mode, k=k, embedder=embedder)
