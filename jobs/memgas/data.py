"""LoCoMo (../shared/data/papers/memgas/locomo10.json, the file MemGAS's data processing reads):
ten long two-person conversations of 19-35 dated sessions, with QA whose gold evidence is dialogue
ids (``D<session>:<turn>``). Gold memories are the sessions holding the evidence."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

_EVIDENCE = re.compile(r"D(\d+):")


@dataclass
class Session:
    index: int
    """The session number in the conversation (1-based, as in the dialogue ids)."""
    date: str
    turns: list[str]
    dataset_summary: str = ""

    @property
    def text(self) -> str:
        return f"[{self.date}]\n" + "\n".join(self.turns)


@dataclass
class Question:
    conversation: str
    question: str
    answer: str
    category: int
    gold_sessions: set[int] = field(default_factory=set)


@dataclass
class Conversation:
    sample_id: str
    sessions: list[Session]
    questions: list[Question]

    def first_sessions(self, n: int) -> "Conversation":
        """The conversation cut after ``n`` sessions, with the questions answerable from them."""
        keep = self.sessions[:n]
        known = {s.index for s in keep}
        return Conversation(self.sample_id, keep, [q for q in self.questions if q.gold_sessions <= known])


def default_path() -> Path:
    from jobs.runner import REPO_ROOT

    return REPO_ROOT.parent / "shared" / "data" / "papers" / "memgas" / "locomo10.json"


def load_locomo(path: Path, categories: tuple[int, ...] = (1, 2, 3, 4)) -> list[Conversation]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the LoCoMo file lives in shared/data/papers/memgas/ "
                                "beside the checkout (see SOURCES.md there), or set data_path")
    out = []
    for sample in json.loads(path.read_text()):
        conv = sample["conversation"]
        summaries = sample.get("session_summary", {})
        sessions = []
        for key in sorted((k for k in conv if re.fullmatch(r"session_\d+", k)), key=lambda k: int(k.split("_")[1])):
            idx = int(key.split("_")[1])
            turns = [f"{t['speaker']}: {t['text']}" for t in conv[key] if t.get("text")]
            if turns:
                sessions.append(Session(idx, conv.get(f"{key}_date_time", ""), turns,
                                        summaries.get(f"{key}_summary", "")))
        known = {s.index for s in sessions}
        questions = []
        for qa in sample["qa"]:
            if qa.get("category") not in categories or "answer" not in qa:
                continue
            gold = {int(m) for ev in qa.get("evidence", []) for m in _EVIDENCE.findall(str(ev))} & known
            if gold:
                questions.append(Question(sample["sample_id"], qa["question"], str(qa["answer"]), qa["category"], gold))
        out.append(Conversation(sample["sample_id"], sessions, questions))
    return out
