"""Background corpus, tokenizer and the Fictional Knowledge documents and probes.

Background corpus: no web corpus (the paper uses Dolma) can be reached offline, so the
background text is English prose that ships with the Python interpreter itself: the
language-reference topics of `pydoc_data` plus the docstrings (longer than 200 characters) of
the standard library's modules, classes and functions, read with `ast` (nothing is imported).
About 1.6 M characters on Python 3.11; it is real, varied technical English, identical on
every machine with the same Python version, and unrelated to the fictional facts. Its SHA-256
is recorded in the results.

Tokenizer: words with byte fallback. The vocabulary is the 256 bytes plus the most frequent
GPT-2-style pre-tokens (`" word"`, `"word"`, punctuation runs) of the background corpus only;
any other pre-token is spelled byte by byte. So the invented names of the fictional documents
("Zorgon", "Calidus") are new byte sequences to the model, as rare names are new subword
sequences to a real LM.
"""
from __future__ import annotations

import ast
import hashlib
import json
import re
import sysconfig
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_PRETOKEN = re.compile(r" ?[A-Za-z0-9_]+| ?[^A-Za-z0-9_\s]+|\s+")
_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "turtledemo", "ensurepip"}
DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "papers"
PROBE_KINDS = ("mem", "gen", "hard_gen")  # memorization, semantic generalization, composition


def background_corpus(max_chars: int | None = None) -> list[str]:
    """Documents of the offline background corpus (see the module docstring)."""
    import pydoc_data.topics as topics

    docs = [t for _, t in sorted(topics.topics.items())]
    if max_chars is None or sum(map(len, docs)) < max_chars:
        docs += _stdlib_docstrings()
    if max_chars is not None:
        kept, total = [], 0
        for d in docs:
            if total >= max_chars:
                break
            kept.append(d)
            total += len(d)
        docs = kept
    return docs


def _stdlib_docstrings() -> list[str]:
    docs = []
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        if _SKIP_DIRS & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 200:
                    docs.append(doc)
    return docs


def corpus_sha256(docs: list[str]) -> str:
    return hashlib.sha256("\x00".join(docs).encode()).hexdigest()


class WordByteTokenizer:
    """Pre-tokens in the vocabulary get one id; all others fall back to their UTF-8 bytes (ids 0-255)."""

    def __init__(self, words: list[str]):
        self.words = list(words)
        self.index = {w: 256 + i for i, w in enumerate(self.words)}

    @classmethod
    def fit(cls, docs: list[str], vocab_size: int) -> "WordByteTokenizer":
        if vocab_size <= 256:
            raise ValueError(f"vocab_size={vocab_size} must exceed the 256 byte ids")
        counts = Counter(p for d in docs for p in _PRETOKEN.findall(d) if len(p.encode()) > 1)
        return cls([w for w, _ in counts.most_common(vocab_size - 256)])

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.words)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in _PRETOKEN.findall(text):
            tid = self.index.get(piece)
            if tid is None:
                ids.extend(piece.encode())
            else:
                ids.append(tid)
        return ids


@dataclass
class Probe:
    doc: int          # index of the fictional document
    kind: str         # one of PROBE_KINDS
    input_ids: list[int]
    target_ids: list[int]


def load_fictional(data_dir: Path = DATA_DIR) -> list[dict]:
    """The 130 Fictional Knowledge items; items 0-39 carry 9 paraphrases each."""
    path = Path(data_dir) / "fictional_knowledge_paraphrased.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the Fictional Knowledge data must sit in shared/data/papers/")
    items = json.loads(path.read_text())
    for i, it in enumerate(items):
        missing = {"train_context", "mem_input", "mem_target", "gen_input", "gen_target",
                   "hard_gen_input", "hard_gen_target"} - set(it)
        if missing:
            raise ValueError(f"{path}: item {i} lacks {sorted(missing)}")
    return items


def build_probes(items: list[dict], doc_ids: list[int], tok: WordByteTokenizer,
                 probe_context: int) -> list[Probe]:
    """Probe = input (last `probe_context` tokens kept) followed by " " + target, as the official code joins them."""
    probes = []
    for d in doc_ids:
        for kind in PROBE_KINDS:
            for inp, tgt in zip(items[d][f"{kind}_input"], items[d][f"{kind}_target"]):
                probes.append(Probe(d, kind, tok.encode(inp)[-probe_context:], tok.encode(" " + tgt)))
    return probes
