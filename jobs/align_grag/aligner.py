"""The Align-GRAG aligner: a graph neural network over the retrieved subgraph (torch-geometric GAT
with edge features) that scores node importance and embeds the graph, trained with

* a KL loss between its node distribution and node-importance targets derived from the model's
  reasoning about the question (``KL(target || softmax(scores))`` per graph), and
* a contrastive (InfoNCE, in-batch negatives) loss between the pooled graph embedding and the
  embedding of that reasoning -- the dual alignment.

A pure ``nn.Module``; the training loop lives in the job.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

with warnings.catch_warnings():  # torch-geometric's import scripts functions with the deprecated torch.jit
    warnings.simplefilter("ignore", DeprecationWarning)
    from torch_geometric.nn import GATConv, global_mean_pool


class Aligner(nn.Module):
    def __init__(self, in_dim: int = 384, hidden: int = 128, out_dim: int = 384, heads: int = 2) -> None:
        super().__init__()
        self.conv1 = GATConv(in_dim, hidden, heads=heads, edge_dim=in_dim, concat=False)
        self.conv2 = GATConv(hidden + in_dim, hidden, heads=heads, edge_dim=in_dim, concat=False)
        self.score = nn.Sequential(nn.Linear(hidden + in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.project = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor, batch: torch.Tensor,
                query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(node scores (N,), graph embeddings (B, out_dim)); ``query`` (B, in_dim) is added to
        each node's features so importance is relative to the question."""
        x = x + query[batch]
        h = torch.relu(self.conv1(x, edge_index, edge_attr))
        h = torch.relu(self.conv2(torch.cat([h, x], dim=-1), edge_index, edge_attr))
        scores = self.score(torch.cat([h, x], dim=-1)).squeeze(-1)
        return scores, self.project(global_mean_pool(h, batch))


def kl_node_loss(scores: torch.Tensor, targets: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """Mean over graphs of KL(target || softmax(scores within the graph))."""
    from torch_geometric.utils import softmax as segment_softmax

    log_pred = torch.log(segment_softmax(scores, batch) + 1e-12)
    per_node = targets * (torch.log(targets + 1e-12) - log_pred)
    graphs = int(batch.max()) + 1
    return torch.zeros(graphs).index_add_(0, batch, per_node).mean()


def info_nce(graph_emb: torch.Tensor, text_emb: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    g = nn.functional.normalize(graph_emb, dim=-1)
    t = nn.functional.normalize(text_emb, dim=-1)
    logits = g @ t.T / temperature
    labels = torch.arange(len(g))
    return (nn.functional.cross_entropy(logits, labels) + nn.functional.cross_entropy(logits.T, labels)) / 2
