"""ExplaGraphs samples as graphs and the subgraph retrieval of G-Retriever / Align-GRAG: node and
edge prizes from embedding similarity to the query, then a prize-collecting Steiner tree
(``pcst_fast``, Goemans-Williamson pruning).

Data: ``shared/data/papers/align_grag/expla_graphs_train_dev.tsv`` (arg1, arg2, label, graph of
``(head; relation; tail)`` triples), split 60/20/20 as G-Retriever does (scikit-learn
``train_test_split`` with random_state 42). ``distractors`` > 0 adds that many triples drawn from
other samples' graphs -- generated noise, named in the report -- because each ExplaGraphs graph is
already its gold explanation, which leaves retrieval and pruning nothing to remove.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Sample:
    arg1: str
    arg2: str
    label: str
    triples: list[tuple[str, str, str]]
    n_gold: int = -1
    """How many of ``triples`` are the sample's own (the rest are distractors); -1: all."""

    @property
    def query(self) -> str:
        return f"{self.arg1} {self.arg2}"


def data_path() -> Path:
    from jobs.runner import REPO_ROOT

    return REPO_ROOT.parent / "shared" / "data" / "papers" / "align_grag" / "expla_graphs_train_dev.tsv"


def parse_graph(text: str) -> list[tuple[str, str, str]]:
    return [tuple(p.strip().lower() for p in m.groups())  # type: ignore[misc]
            for m in re.finditer(r"\(([^;()]+);([^;()]+);([^;()]+)\)", text)]


def load_splits(path: Path) -> dict[str, list[Sample]]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing (shared/data/papers/align_grag/ beside the checkout, see SOURCES.md)")
    from sklearn.model_selection import train_test_split

    with open(path, newline="") as fh:
        rows = [Sample(r["arg1"], r["arg2"], r["label"].strip(), parse_graph(r["graph"]))
                for r in csv.DictReader(fh, delimiter="\t")]
    idx = np.arange(len(rows))
    train, rest = train_test_split(idx, test_size=0.4, random_state=42)
    val, test = train_test_split(rest, test_size=0.5, random_state=42)
    return {name: [rows[i] for i in part] for name, part in (("train", train), ("val", val), ("test", test))}


def with_distractors(sample: Sample, pool: list[Sample], n: int, rng: np.random.Generator) -> Sample:
    if n <= 0:
        return sample
    others = [t for s in (pool[i] for i in rng.choice(len(pool), size=min(len(pool), n), replace=False))
              for t in s.triples if s is not sample]
    extra = [others[i] for i in rng.permutation(len(others))[:n]]
    return Sample(sample.arg1, sample.arg2, sample.label, sample.triples + extra, len(sample.triples))


@dataclass
class Graph:
    nodes: list[str]
    edges: list[tuple[int, str, int]]

    @classmethod
    def from_triples(cls, triples: list[tuple[str, str, str]]) -> "Graph":
        nodes: dict[str, int] = {}
        edges = []
        for h, r, t in triples:
            edges.append((nodes.setdefault(h, len(nodes)), r, nodes.setdefault(t, len(nodes))))
        return cls(list(nodes), edges)

    def text(self, keep: set[int] | None = None) -> str:
        keep = set(range(len(self.nodes))) if keep is None else keep
        return "\n".join(f"({self.nodes[h]}; {r}; {self.nodes[t]})" for h, r, t in self.edges if h in keep and t in keep)


def pcst_prizes(node_sims: np.ndarray, edge_sims: np.ndarray, n_edges: int, top_k: int,
                edge_cost: float) -> tuple[np.ndarray, np.ndarray]:
    """G-Retriever's prizes: the top-k nodes (and edges) by similarity get k, k-1, ..., 1; an
    edge's prize lowers its cost (clamped at a small positive cost: G-Retriever instead splits
    such edges with a virtual node)."""
    prizes = np.zeros(len(node_sims))
    k = min(top_k, len(node_sims))
    prizes[np.argsort(-node_sims)[:k]] = np.arange(k, 0, -1)
    e_prizes = np.zeros(n_edges)
    ke = min(top_k, n_edges)
    e_prizes[np.argsort(-edge_sims)[:ke]] = np.arange(ke, 0, -1) / max(ke, 1) * edge_cost
    return prizes, np.maximum(edge_cost - e_prizes, 1e-3)


def _pcst_fast_works() -> bool:
    """Some builds of ``pcst_fast`` return corrupted arrays (seen with numpy 2): check it on an
    instance whose answer is known -- a path whose two prized ends are worth joining."""
    try:
        import pcst_fast

        v, _ = pcst_fast.pcst_fast(np.array([[0, 1], [1, 2], [2, 3]], dtype=np.int64), np.array([3.0, 0, 0, 3.0]),
                                   np.array([0.5, 0.5, 0.5]), -1, 1, "gw", 0)
        return sorted(v.tolist()) == [0, 1, 2, 3]
    except Exception:  # noqa: BLE001 -- any failure means: use the fallback
        return False


def greedy_pcst(prizes: np.ndarray, costs: np.ndarray, edges: list[tuple[int, int]]) -> set[int]:
    """A prize-collecting tree grown greedily: start at the best-prized node, then repeatedly
    join the node whose prize exceeds the cost of its cheapest path to the tree by the most."""
    import heapq

    adj: dict[int, list[tuple[int, float]]] = {}
    for (h, t), c in zip(edges, costs):
        adj.setdefault(h, []).append((t, float(c)))
        adj.setdefault(t, []).append((h, float(c)))
    tree = {int(np.argmax(prizes))}
    while True:
        dist = {n: 0.0 for n in tree}
        prev: dict[int, int] = {}
        heap = [(0.0, n) for n in tree]
        while heap:
            d, u = heapq.heappop(heap)
            if d > dist.get(u, np.inf):
                continue
            for v, c in adj.get(u, []):
                if d + c < dist.get(v, np.inf):
                    dist[v], prev[v] = d + c, u
                    heapq.heappush(heap, (d + c, v))
        gains = {n: prizes[n] - dist[n] for n in dist if n not in tree}
        best = max(gains, key=gains.get, default=None)
        if best is None or gains[best] <= 0:
            return tree
        while best not in tree:
            tree.add(best)
            best = prev[best]


def pcst_subgraph(node_sims: np.ndarray, edge_sims: np.ndarray, edges: list[tuple[int, int]],
                  top_k: int = 3, edge_cost: float = 0.5) -> set[int]:
    """Nodes of the prize-collecting Steiner tree (``pcst_fast``, GW pruning, one tree), or of
    ``greedy_pcst`` where this build of pcst_fast fails its self-check."""
    n = len(node_sims)
    if n == 0 or not edges:
        return set(range(n))
    prizes, costs = pcst_prizes(node_sims, edge_sims, len(edges), top_k, edge_cost)
    if PCST_FAST_OK:
        import pcst_fast

        vertices, _ = pcst_fast.pcst_fast(np.asarray(edges, dtype=np.int64), prizes, costs, -1, 1, "gw", 0)
        return {int(v) for v in vertices} or {int(np.argmax(prizes))}
    return greedy_pcst(prizes, costs, edges)


PCST_FAST_OK = _pcst_fast_works()
