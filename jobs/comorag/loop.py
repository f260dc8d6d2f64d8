"""ComoRAG's metacognitive loop and the naive single-step RAG baseline, for one question.

Try to answer from a tri-layer retrieval; on an impasse run up to ``max_cycles`` cycles of:
Self-Probe (the model writes up to ``probes`` new queries from the question and what the memory
pool holds), Tri-Retrieve (each probe searches the veridical, semantic and episodic layers),
Mem-Encode (the evidence of each probe becomes a memory unit: a cue the model writes about the
question), Mem-Fuse (the pool's units closest to the question are fused into one cue) and
Try-Answer (the question, the retrieved evidence and the fused cue). Impasse: the model says it
cannot answer (the paper's form, ``impasse="refusal"``); ``"refusal+confidence"`` also treats an
answer whose mean log-probability per word is below ``confidence_floor`` as an impasse, because a
small model rarely refuses.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from jobs.comorag.layers import Unit

REFUSAL = re.compile(r"no answer|not (?:mentioned|stated|say|given|clear)|cannot|can't|don't know|unknown|unclear", re.I)
SYSTEM = ("Answer the question about the story from the given evidence, in a few words. If the evidence is not "
          "enough, reply exactly: No Answer.")


class TriRetriever:
    def __init__(self, units: list[Unit], emb, k_per_layer: dict[str, int]) -> None:
        self.units, self.emb, self.k = units, emb, k_per_layer
        self.vecs = emb.encode([u.text for u in units])
        self.layer_of = np.array([u.layer for u in units])

    def search(self, query: str) -> list[Unit]:
        q = self.emb.encode([query])[0]
        sims = self.vecs @ q
        out: list[Unit] = []
        for layer, k in self.k.items():
            idx = np.flatnonzero(self.layer_of == layer)
            out += [self.units[i] for i in idx[np.argsort(-sims[idx])][:k]]
        return out

    def search_layer(self, query: str, layer: str, k: int) -> list[Unit]:
        q = self.emb.encode([query])[0]
        idx = np.flatnonzero(self.layer_of == layer)
        return [self.units[i] for i in idx[np.argsort(-(self.vecs[idx] @ q))][:k]]


def _evidence_text(units: list[Unit], max_chars: int) -> str:
    text = "\n".join(f"- ({u.layer}) {u.text}" for u in units)
    return text[:max_chars]


def try_answer(backend, question: str, evidence: list[Unit], cue: str, cfg) -> tuple[str, str]:
    from jobs.backends import GenParams

    prompt = f"Evidence:\n{_evidence_text(evidence, cfg.max_evidence_chars)}\n"
    if cue:
        prompt += f"\nWhat we worked out so far: {cue}\n"
    prompt += f"\nQuestion: {question}\nAnswer:"
    return backend.generate([prompt], GenParams(max_tokens=cfg.answer_tokens, stop=("\n",)), system=SYSTEM)[0][0], prompt


def is_impasse(backend, answer: str, prompt: str, cfg) -> bool:
    if not answer.strip() or REFUSAL.search(answer):
        return True
    if cfg.impasse == "refusal+confidence":
        words = max(1, len(answer.split()))
        return backend.logprobs([prompt], [answer], system=SYSTEM)[0] / words < cfg.confidence_floor
    return False


def dedupe(units: list[Unit]) -> list[Unit]:
    seen, out = set(), []
    for u in units:
        if (u.layer, u.text) not in seen:
            seen.add((u.layer, u.text))
            out.append(u)
    return out


def naive_rag(backend, retriever: TriRetriever, question: str, cfg) -> dict[str, Any]:
    evidence = retriever.search_layer(question, "veridical", cfg.naive_k)
    answer, prompt = try_answer(backend, question, evidence, "", cfg)
    return {"answer": answer, "sources": sorted({s for u in evidence for s in u.sources}),
            "chunk_sources": _chunk_sources(evidence), "cycles": 0, "prompt_chars": len(prompt)}


def comorag(backend, retriever: TriRetriever, emb, question: str, cfg) -> dict[str, Any]:
    from jobs.backends import GenParams

    evidence = retriever.search(question)
    answer, prompt = try_answer(backend, question, evidence, "", cfg)
    pool: list[Unit] = []
    probes_asked: list[str] = []
    cycles = 0
    while cycles < cfg.max_cycles and is_impasse(backend, answer, prompt, cfg):
        cycles += 1
        known = "; ".join(u.text for u in pool[-4:]) or "nothing yet"
        probe_prompt = (f"Question: {question}\nWhat we know: {known}\nWrite {cfg.probes} short search queries, "
                        "one per line, that would find the missing facts in the story.")
        raw = backend.generate([probe_prompt], GenParams(max_tokens=16 * cfg.probes))[0][0]
        probes = [re.sub(r"^\s*(?:\d+[.)]|[-*])\s*", "", line).strip() for line in raw.splitlines()]
        probes = [p for p in probes if p and p not in probes_asked][:cfg.probes] or [question]
        probes_asked += probes
        encode_prompts, probe_evidence = [], []
        for probe in probes:
            ev = retriever.search(probe)
            probe_evidence.append(ev)
            encode_prompts.append(f"Evidence:\n{_evidence_text(ev, cfg.max_evidence_chars // 2)}\n\nIn one sentence, "
                                  f"what does this evidence tell about: {question}")
        cues = backend.generate(encode_prompts, GenParams(max_tokens=cfg.cue_tokens, stop=("\n",)))
        for ev, cue in zip(probe_evidence, cues):
            pool.append(Unit("memory", cue[0], sorted({s for u in ev for s in u.sources})))
        pool_vecs = emb.encode([u.text for u in pool])
        closest = [pool[i] for i in np.argsort(-(pool_vecs @ emb.encode([question])[0]))[:cfg.fuse_top]]
        fuse_prompt = (f"Question: {question}\nNotes:\n" + "\n".join(f"- {u.text}" for u in closest)
                       + "\nCombine the notes into one or two sentences that help answer the question.")
        fused = backend.generate([fuse_prompt], GenParams(max_tokens=cfg.cue_tokens * 2))[0][0]
        evidence = dedupe(retriever.search(question) + [u for ev in probe_evidence for u in ev[:2]])
        answer, prompt = try_answer(backend, question, evidence, fused, cfg)
    sources = {s for u in evidence + pool for s in u.sources}
    return {"answer": answer, "sources": sorted(sources), "chunk_sources": _chunk_sources(evidence),
            "cycles": cycles, "probes": probes_asked, "prompt_chars": len(prompt)}


def _chunk_sources(units: list[Unit]) -> list[int]:
    """Chunks the answer saw verbatim (veridical units), not only through a summary."""
    return sorted({s for u in units if u.layer in ("veridical", "triple") for s in u.sources})
