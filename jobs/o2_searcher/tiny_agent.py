"""The ``tiny`` search agent: the policy of tiny_policy.py acting in the job's search environment.

Same protocol as the language-model agent (agent.py): a turn is ``<search>q1; q2</search>`` (the
environment retrieves each query's top k documents, which become visible for the next turn) or
``<answer>..</answer>``, at most ``max_turns`` turns of at most ``max_new_tokens`` actions each (a
turn cut off there ends the trajectory, as an unfinished generation does); the agent's text is
scored by the same rewards. The legal-action masks only keep the text parseable (a copy action
means a query word, a span's first word or a span's last word, by where it stands; a word is
not copied twice into one turn's queries, as ``no_repeat_ngram_size=1`` would keep a language
model from it); nothing in them steers the agent to search, to what it searches for or to which
span it answers with.

Every copy candidate is described by lexical features only (``FEATURES``), computed from the
question, the retrieved documents and the corpus' document frequencies.
"""

from __future__ import annotations

import copy
import functools
import math
import random
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from jobs.o2_searcher import tiny_policy as tp
from jobs.o2_searcher.environment import Question, SearchEnv
from jobs.o2_searcher.rewards import extract_queries

FEATURES = ("question", "question_position", "document", "document_rank", "idf", "in_question",
            "left_in_question", "right_in_question", "after_question_tail", "segment_first", "segment_last",
            "ends_clause", "starts_clause", "capitalised", "no_content",
            "used_in_queries", "follows_last_copy", "span_length", "span_same_word", "span_next_word",
            "span_crosses_clause", "bias")
STATIC = FEATURES.index("used_in_queries")
MAX_DOC_WORDS = 60
MAX_SPAN = 60
CLOSED_PREFIX, CLOSED_SUFFIX = "Complete the sentence:", "..."
_PUNCT = str.maketrans("", "", string.punctuation)


@functools.lru_cache(maxsize=1 << 17)
def norm(word: str) -> str:
    """One word under the exact-match normalisation (lower case, no punctuation, no article)."""
    w = word.lower().translate(_PUNCT)
    return "" if w in ("a", "an", "the") else w


def corpus_idf(corpus: list[str]) -> dict[str, float]:
    df = Counter(w for doc in corpus for w in {norm(x) for x in doc.split()})
    return {w: math.log(len(corpus) / n) for w, n in df.items()}


class Context:
    """The words the agent can copy: the question (segment 0), then each retrieved document
    (segment r for the r-th), with their static features [P, STATIC] and whether each word
    is already used in a query."""

    def __init__(self, question: Question, idf: dict[str, float]) -> None:
        self.idf, self.max_idf = idf, max(idf.values(), default=1.0)
        self.question_words = question.text.split()
        self.words: list[str] = []
        self.normed: list[str] = []
        self.qset = {norm(w) for w in self.question_words} - {""}
        body = question.text.removeprefix(CLOSED_PREFIX).removesuffix(CLOSED_SUFFIX).split()
        self.qtail = [norm(w) for w in body][-4:]
        self.static = np.zeros((0, STATIC), dtype=np.float32)
        self.seg = np.zeros(0, dtype=np.int64)
        self.ends = np.zeros(0, dtype=bool)
        self.used = np.zeros(0, dtype=bool)
        self.used_words: set[str] = set()
        self.add([self.question_words])

    def add(self, segments: list[list[str]]) -> None:
        """Appends segments (the question, or the documents one search returned)."""
        for words in segments:
            s, nq = (int(self.seg.max()) + 1 if len(self.seg) else 0), len(self.question_words)
            normed = [norm(w) for w in words]
            n = len(words)
            f = np.zeros((n, STATIC), dtype=np.float32)
            ends = np.array([w[-1] in ".,;:!?" or w.endswith(('."', ".'", '.)')) for w in words], dtype=bool)
            inq = np.array([w in self.qset for w in normed], dtype=np.float32)
            for j, (w, nw) in enumerate(zip(words, normed)):
                tail = 0
                while tail < min(len(self.qtail), j) and normed[j - 1 - tail] == self.qtail[-1 - tail]:
                    tail += 1
                f[j] = (s == 0, j / nq if s == 0 else 0.0, s > 0, 1.0 / s if s > 0 else 0.0,
                        self.idf.get(nw, self.max_idf) / self.max_idf if nw else 0.0, inq[j],
                        inq[max(0, j - 3):j].sum() / 3, inq[j + 1:j + 4].sum() / 3, tail / 4,
                        j == 0, j == n - 1, ends[j], j == 0 or ends[j - 1], w[:1].isupper(), not nw)
            self.words += words
            self.normed += normed
            self.static = np.concatenate([self.static, f])
            self.seg = np.concatenate([self.seg, np.full(n, s)])
            self.ends = np.concatenate([self.ends, ends])
            self.used = np.concatenate([self.used, np.array([w in self.used_words for w in normed], dtype=bool)])

    def mark_used(self, word: str) -> None:
        w = norm(word)
        if w:
            self.used_words.add(w)
            self.used |= np.array([x == w for x in self.normed])


@dataclass
class TinyTrajectory:
    question: Question
    ctx: Context
    agent_text: str = ""
    queries: list[str] = field(default_factory=list)
    done: bool = False
    turn: int = 0
    state: str = "turn"
    turn_start: int = 0
    turn_actions: int = 0
    span_start: int = -1
    last_copy: int = -1
    copied: set[int] = field(default_factory=set)
    """Words copied into this turn's queries: not copied twice (as no_repeat_ngram_size=1 would)."""
    bulleted: bool = False
    items: int = 0
    prev_kind: int = -1
    prev_features: np.ndarray = field(default_factory=lambda: np.zeros(len(FEATURES), dtype=np.float32))
    steps: list[tuple] = field(default_factory=list)
    """(previous kind, previous features, candidates [P, F], legal [6 + P], action) per action."""
    unusable: bool = False
    """A demonstration whose answer was not among the retrieved words."""

    def __post_init__(self) -> None:
        if self.prev_kind < 0:   # the first action follows the question, open or closed
            self.prev_kind = tp.OPEN_QUESTION if self.question.open_ended else tp.CLOSED_QUESTION


def options(t: TinyTrajectory) -> tuple[np.ndarray, np.ndarray]:
    """The candidates' features [P, F] and the legal actions [6 + P] in the trajectory's state."""
    ctx, n = t.ctx, len(t.ctx.words)
    dyn = np.zeros((n, len(FEATURES) - STATIC), dtype=np.float32)
    dyn[:, 0] = ctx.used
    dyn[:, 1] = np.arange(n) == t.last_copy + 1
    dyn[:, -1] = 1.0
    legal = np.zeros(len(tp.FIXED) + n, dtype=bool)
    copies = legal[len(tp.FIXED):]
    if t.state == "turn":
        legal[[tp.SEARCH, tp.ANSWER]] = True
    elif t.state in ("query_first", "query", "item"):
        copies[:] = True
        if t.state == "query":
            legal[tp.END_SEARCH] = True
            legal[tp.SEPARATOR] = t.agent_text.count(";", t.turn_start) < 3 and len(t.copied) < n
        if t.state != "item":
            copies[list(t.copied)] = False
    elif t.state == "answer":
        copies[:] = True
        legal[tp.BULLET] = True
        legal[tp.END_ANSWER] = t.items > 0
    elif t.state == "span_end":
        d = np.arange(n) - t.span_start
        copies[:] = (ctx.seg == ctx.seg[t.span_start]) & (d >= 0) & (d < MAX_SPAN)
        clauses = np.concatenate([[0], np.cumsum(ctx.ends)])   # clause ends among words [start, j)
        dyn[:, 2] = np.clip(d, 0, None) / 10
        dyn[:, 3], dyn[:, 4] = d == 0, d == 1
        dyn[:, 5] = (d > 0) & (clauses[:n] - clauses[t.span_start] > 0)
    return np.concatenate([ctx.static, dyn], axis=1), legal


_OPENS = {tp.SEARCH: ("<search>", "query_first"), tp.SEPARATOR: ("; ", "query_first"), tp.ANSWER: ("<answer>", "answer"),
          tp.BULLET: ("\n- ", "item")}
"""The protocol tokens that open something: their text and the state they lead to."""


def apply(t: TinyTrajectory, action: int, features: np.ndarray, env: SearchEnv, max_turns: int, max_actions: int) -> None:
    """Writes the action's text and moves the trajectory to its next state (and the environment
    answers a finished search)."""
    kind, t.prev_features = action, np.zeros(len(FEATURES), dtype=np.float32)
    if action >= len(tp.FIXED):
        j = action - len(tp.FIXED)
        t.prev_features, t.last_copy = features[j], j
        if t.state in ("query_first", "query"):
            t.agent_text += ("" if t.state == "query_first" else " ") + t.ctx.words[j]
            t.copied.add(j)
            t.ctx.mark_used(t.ctx.words[j])
            kind, t.state = tp.QUERY_WORD, "query"
        elif t.state in ("answer", "item"):
            t.bulleted, t.span_start, kind, t.state = t.state == "item", j, tp.SPAN_START, "span_end"
        else:
            span = " ".join(t.ctx.words[t.span_start:j + 1])
            t.agent_text += (span if t.bulleted or not t.items else " " + span)
            t.items, kind, t.state = t.items + 1, tp.SPAN_END, "answer"
    elif action in _OPENS:
        t.agent_text += _OPENS[action][0]
        t.state = _OPENS[action][1]
    elif action == tp.END_ANSWER:
        t.agent_text += "\n</answer>" if "\n- " in t.agent_text[t.turn_start:] else "</answer>"
        t.done = True
    elif action == tp.END_SEARCH:
        t.agent_text += "</search>"
        queries = extract_queries(t.agent_text[t.turn_start:])[:4]
        t.queries += queries
        if t.turn == max_turns - 1:
            t.done = True
        else:
            t.ctx.add([env.corpus[doc].split()[:MAX_DOC_WORDS] for doc in env.retrieve(queries)])
            t.turn, t.turn_start, t.turn_actions, t.state = t.turn + 1, len(t.agent_text), -1, "turn"
            t.copied = set()
            kind = tp.INFORMATION
    t.prev_kind = kind
    t.turn_actions += 1
    if not t.done and t.turn_actions >= max_actions:   # cut off mid-turn, like an unfinished generation
        t.done = True


def _pad(arrays: list[np.ndarray], width: int, fill: float = 0) -> np.ndarray:
    out = np.full((len(arrays), width) + arrays[0].shape[1:], fill, dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[i, :len(a)] = a
    return out


def _keywords(q: Question) -> list[int]:
    """The question's words a demonstration searches with: all but the closed questions' fixed
    prefix and suffix and the stop words, which the BM25 index ignores anyway."""
    from bm25s.stopwords import STOPWORDS_EN

    words = q.text.split()
    first = 0 if q.open_ended else len(CLOSED_PREFIX.split())
    last = len(words) - (0 if q.open_ended else int(words[-1] == CLOSED_SUFFIX))
    return [j for j in range(first, last) if norm(words[j]) and norm(words[j]) not in STOPWORDS_EN]


def demonstration_action(t: TinyTrajectory, legal: np.ndarray) -> int:
    """The demonstrated action: search with the question's words, then answer -- a closed
    question with its answer copied from the retrieved documents, an open one with each
    retrieved document as a finding (the warm start of train.py, in copy actions)."""
    ctx, fixed = t.ctx, len(tp.FIXED)
    if t.state == "turn":
        return tp.SEARCH if t.turn == 0 else tp.ANSWER
    if t.state in ("query_first", "query"):
        words = [j for j in _keywords(t.question) if j not in t.copied]
        return fixed + words[0] if words else tp.END_SEARCH
    docs = int(ctx.seg.max())
    if t.question.open_ended:
        if t.state == "answer":
            return tp.BULLET if t.items < docs else tp.END_ANSWER
        if t.state == "item":
            return fixed + int(np.flatnonzero(ctx.seg == t.items + 1)[0])
        return fixed + int(np.flatnonzero(ctx.seg == ctx.seg[t.span_start])[-1])
    gold = [w for w in (norm(x) for x in t.question.golds[0].split()) if w]
    if t.state == "answer" and t.items:
        return tp.END_ANSWER
    for j in range(len(ctx.question_words), len(ctx.words)):
        if not gold or ctx.normed[j] != gold[0]:
            continue
        end, seen = j, [gold[0]]
        while len(seen) < len(gold) and end + 1 < len(ctx.words) and ctx.seg[end + 1] == ctx.seg[j]:
            end += 1
            seen += [ctx.normed[end]] if ctx.normed[end] else []
        if seen == gold:
            return fixed + (j if t.state == "answer" else end)
    t.unusable = True
    return tp.END_ANSWER if legal[tp.END_ANSWER] else int(np.flatnonzero(legal)[0])


class TinyAgent:
    """The tiny policy with the job's agent interface (train.py): rollout, log-probs, warm start."""

    def __init__(self, cell: dict[str, Any], env: SearchEnv, device: torch.device) -> None:
        self.cell, self.env, self.device = cell, env, device
        self.idf = corpus_idf(env.corpus)
        self.module = tp.TinySearchPolicy(len(FEATURES)).to(device)

    def reference(self) -> tp.TinySearchPolicy:
        return copy.deepcopy(self.module).eval()

    @torch.no_grad()
    def rollout(self, module: tp.TinySearchPolicy | None, questions: list[Question], temperature: float,
                teacher: Any = None) -> list[TinyTrajectory]:
        """Trajectories of ``module`` (sampled at ``temperature``, greedy at 0), or of ``teacher(trajectory,
        legal) -> action`` when given (demonstrations)."""
        if module is None and teacher is None:
            raise ValueError("rollout needs a policy module or a teacher")
        trajs = [TinyTrajectory(q, Context(q, self.idf)) for q in questions]
        h = module.initial_state(len(trajs), self.device) if module is not None else torch.zeros(0)
        while live := [i for i, t in enumerate(trajs) if not t.done]:
            opts = [options(trajs[i]) for i in live]
            if teacher is not None or module is None:
                actions = [teacher(trajs[i], legal) for i, (_, legal) in zip(live, opts)]
            else:
                rows = torch.tensor(live, device=self.device)
                kinds = torch.tensor([trajs[i].prev_kind for i in live], device=self.device)
                prev = torch.from_numpy(np.stack([trajs[i].prev_features for i in live])).to(self.device)
                h[rows] = module.advance(h[rows], kinds, prev)
                width = max(len(c) for c, _ in opts)
                cands = torch.from_numpy(_pad([c for c, _ in opts], width)).to(self.device)
                legal = torch.from_numpy(_pad([m for _, m in opts], len(tp.FIXED) + width, False)).to(self.device)
                logits = module.logits(h[rows], cands, legal)
                picked = (logits.argmax(-1) if temperature <= 0 else
                          torch.distributions.Categorical(logits=logits / temperature).sample())
                actions = picked.tolist()
            for i, (cands_i, legal_i), a in zip(live, opts, actions):
                t = trajs[i]
                t.steps.append((t.prev_kind, t.prev_features, cands_i, legal_i, a))
                apply(t, a, cands_i, self.env, self.cell["max_turns"], self.cell["max_new_tokens"])
        return trajs

    def logprobs(self, module: tp.TinySearchPolicy, trajs: list[TinyTrajectory]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs [N, T] of each trajectory's actions and the mask of real steps."""
        steps = max(len(t.steps) for t in trajs)
        width = max(len(s[2]) for t in trajs for s in t.steps)
        n, f, fixed = len(trajs), len(FEATURES), len(tp.FIXED)
        kinds = np.zeros((n, steps), dtype=np.int64)
        prev = np.zeros((n, steps, f), dtype=np.float32)
        cands = np.zeros((n, steps, width, f), dtype=np.float32)
        legal = np.zeros((n, steps, fixed + width), dtype=bool)
        legal[..., 0] = True                                  # padding steps: a finite dummy log-prob
        actions = np.zeros((n, steps), dtype=np.int64)
        mask = np.zeros((n, steps), dtype=np.float32)
        for i, t in enumerate(trajs):
            for s, (kind, pf, c, lg, a) in enumerate(t.steps):
                kinds[i, s], prev[i, s], actions[i, s], mask[i, s] = kind, pf, a, 1.0
                cands[i, s, :len(c)] = c
                legal[i, s, :len(lg)] = lg
        dev = self.device
        logp = module.replay(*(torch.from_numpy(x).to(dev) for x in (kinds, prev, cands, legal, actions)))
        mask_t = torch.from_numpy(mask).to(dev)
        return logp * mask_t, mask_t

    def warm_start(self, questions: list[Question], seed: int) -> list[float]:
        """Supervised steps on demonstrations (demonstration_action); returns the loss per step."""
        cell = self.cell
        if cell["warm_start_steps"] <= 0:
            return []
        rng = random.Random(seed)
        demos = [d for d in self.rollout(None, questions, 0.0, teacher=demonstration_action) if not d.unusable]
        if not demos:
            raise RuntimeError("no demonstration found its answer among the retrieved documents: check the corpus")
        opt = torch.optim.Adam(self.module.parameters(), lr=cell["warm_start_lr"])
        losses = []
        for _ in range(cell["warm_start_steps"]):
            logp, mask = self.logprobs(self.module, rng.sample(demos, min(cell["warm_start_batch"], len(demos))))
            loss = -logp.sum() / mask.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses
