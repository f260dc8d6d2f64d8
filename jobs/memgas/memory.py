"""MemGAS's mechanism as pure functions over embeddings (numpy; the Gaussian mixture from
scikit-learn): association of a new memory with the historical ones by a two-component Gaussian
mixture over their similarities, the entropy-based granularity router, and personalised PageRank
over the multi-granularity memory graph.

Implemented from the paper's description ("From Single to Multi-Granularity:
Toward Long-Term Memory Association and Selection of Conversational Agents", 2025). Choices the text
leaves open are ours and switchable in the job's config: the router's softmax temperature, its
weight form (softmax of negative entropies; ``inverse``: normalised 1/H), and the restart
probability of the PageRank walk.
"""

from __future__ import annotations

import numpy as np


def gmm_accept(similarities: np.ndarray, min_points: int = 3, posterior: float = 0.5, seed: int = 0) -> np.ndarray:
    """Which historical memories a new memory associates with: fit a two-component 1-D Gaussian
    mixture to the new memory's similarities with the history and accept those whose posterior of
    the higher-mean ("related") component exceeds ``posterior``. Too little history, or one
    degenerate cluster: nothing is accepted (no evidence of a related group)."""
    sims = np.asarray(similarities, dtype=np.float64).ravel()
    if len(sims) < min_points or np.ptp(sims) < 1e-6:
        return np.zeros(len(sims), dtype=bool)
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(n_components=2, random_state=seed, reg_covar=1e-5).fit(sims[:, None])
    related = int(np.argmax(gmm.means_.ravel()))
    return gmm.predict_proba(sims[:, None])[:, related] > posterior


def associate(session_vectors: list[np.ndarray], min_points: int = 3, posterior: float = 0.5,
              seed: int = 0) -> np.ndarray:
    """Symmetric (S, S) association weights between sessions, built as memories arrive in time
    order: session i is compared with sessions < i through the mean of its granularities'
    cosine similarities (``session_vectors``: one (S, d) array per granularity), and linked, with
    that similarity as weight, to the ones the mixture accepts."""
    n = session_vectors[0].shape[0]
    sim = np.mean([v @ v.T for v in session_vectors], axis=0)
    adj = np.zeros((n, n))
    for i in range(1, n):
        accepted = gmm_accept(sim[i, :i], min_points, posterior, seed)
        for j in np.flatnonzero(accepted):
            adj[i, j] = adj[j, i] = max(float(sim[i, j]), 0.0)
    return adj


def softmax(x: np.ndarray, temperature: float) -> np.ndarray:
    z = np.asarray(x, dtype=np.float64) / temperature
    z -= z.max()
    e = np.exp(z)
    return e / e.sum()


def entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def router_weights(similarities: list[np.ndarray], temperature: float = 0.1, form: str = "softmax",
                   top_k: int = 10) -> np.ndarray:
    """The entropy router: each granularity's distribution over its ``top_k`` most similar
    memories (softmax at ``temperature``) has an entropy H_g; a peaked distribution (low H) means
    that granularity singles out a memory, so it gets more weight. ``softmax``: w = softmax(-H);
    ``inverse``: w = (1/H) / sum(1/H). The top-k cut keeps granularities with many units (turns)
    comparable with those with one unit per session; ``top_k=0`` uses all memories."""
    def top(s: np.ndarray) -> np.ndarray:
        return np.sort(s)[::-1][:top_k] if top_k else s

    h = np.array([entropy(softmax(top(np.asarray(s)), temperature)) for s in similarities])
    if form == "softmax":
        return softmax(-h, 1.0)
    if form == "inverse":
        inv = 1.0 / np.maximum(h, 1e-9)
        return inv / inv.sum()
    raise ValueError(f"router form {form!r}: use 'softmax' or 'inverse'")


def personalized_pagerank(adj: np.ndarray, personalization: np.ndarray, restart: float = 0.5,
                          iters: int = 100, tol: float = 1e-10) -> np.ndarray:
    """Stationary scores of a walk on the weighted graph ``adj`` that restarts at
    ``personalization`` with probability ``restart`` each step (dangling mass restarts too)."""
    p = np.asarray(personalization, dtype=np.float64)
    p = p / p.sum()
    out_weight = adj.sum(axis=1)
    transition = np.divide(adj, out_weight[:, None], out=np.zeros_like(adj), where=out_weight[:, None] > 0)
    dangling = out_weight == 0
    r = p.copy()
    for _ in range(iters):
        nxt = (1 - restart) * (r @ transition + r[dangling].sum() * p) + restart * p
        if np.abs(nxt - r).sum() < tol:
            return nxt
        r = nxt
    return r


def memory_graph(n_sessions: int, unit_sessions: list[np.ndarray], association: np.ndarray) -> np.ndarray:
    """The multi-granularity graph: session nodes first, then every granularity's units in order,
    each unit linked to its session (weight 1), sessions linked by their associations."""
    n = n_sessions + sum(len(u) for u in unit_sessions)
    adj = np.zeros((n, n))
    adj[:n_sessions, :n_sessions] = association
    at = n_sessions
    for owners in unit_sessions:
        for k, s in enumerate(owners):
            adj[at + k, s] = adj[s, at + k] = 1.0
        at += len(owners)
    return adj


def session_scores_from_nodes(node_scores: np.ndarray, n_sessions: int, unit_sessions: list[np.ndarray]) -> np.ndarray:
    """A session's score: its own node's plus its units' (the mass the walk puts on it)."""
    out = node_scores[:n_sessions].copy()
    at = n_sessions
    for owners in unit_sessions:
        np.add.at(out, owners, node_scores[at:at + len(owners)])
        at += len(owners)
    return out


def max_per_session(sims: np.ndarray, owners: np.ndarray, n_sessions: int) -> np.ndarray:
    """Single-granularity retrieval: a session scores its best unit's similarity."""
    out = np.full(n_sessions, -np.inf)
    np.maximum.at(out, owners, sims)
    return out
