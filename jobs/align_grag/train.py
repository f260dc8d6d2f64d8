"""Align-GRAG's aligner training and pruning: graphs encoded with the sentence embedder (nodes,
relations, the question), node-importance targets from the model's reasoning (softmax over the
retrieved nodes of their similarity to the reasoning text), KL + contrastive losses."""

from __future__ import annotations

from typing import Any

import numpy as np


def encode_graphs(emb, samples, graphs) -> list[dict[str, Any]]:
    texts = sorted({n for g in graphs for n in g.nodes} | {r for g in graphs for _, r, _ in g.edges}
                   | {s.query for s in samples})
    vec = dict(zip(texts, emb.encode(texts)))
    dim = len(next(iter(vec.values())))
    return [{"sample": s, "graph": g, "q": vec[s.query],
             "x": np.stack([vec[n] for n in g.nodes]) if g.nodes else np.zeros((0, dim), np.float32),
             "edge_x": np.stack([vec[r] for _, r, _ in g.edges]) if g.edges else np.zeros((0, dim), np.float32)}
            for s, g in zip(samples, graphs)]


def to_data(item: dict[str, Any], target_temperature: float | None = None):
    """The retrieved subgraph as a torch-geometric ``Data`` (both edge directions)."""
    import torch
    from torch_geometric.data import Data

    keep = sorted(item["retrieved"])
    local = {n: i for i, n in enumerate(keep)}
    src, dst, attr = [], [], []
    for k, (h, _, t) in enumerate(item["graph"].edges):
        if h in local and t in local:
            src += [local[h], local[t]]
            dst += [local[t], local[h]]
            attr += [item["edge_x"][k], item["edge_x"][k]]
    x = torch.tensor(item["x"][keep], dtype=torch.float32)
    dim = x.shape[1]
    data = Data(x=x, edge_index=torch.tensor([src, dst], dtype=torch.long).reshape(2, -1),
                edge_attr=torch.tensor(np.array(attr), dtype=torch.float32).reshape(-1, dim),
                q=torch.tensor(item["q"], dtype=torch.float32)[None])
    if target_temperature is not None:
        sims = item["x"][keep] @ item["reasoning"] / target_temperature
        p = np.exp(sims - sims.max())
        data.target = torch.tensor(p / p.sum(), dtype=torch.float32)
        data.reasoning = torch.tensor(item["reasoning"], dtype=torch.float32)[None]
    return data


def train_aligner(train_items: list[dict[str, Any]], cfg, ctx) -> tuple[Any, list[float]]:
    import torch
    from torch_geometric.loader import DataLoader

    from jobs.align_grag.aligner import Aligner, info_nce, kl_node_loss

    data = [to_data(it, cfg.target_temperature) for it in train_items]
    model = Aligner(in_dim=data[0].x.shape[1], out_dim=data[0].reasoning.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(ctx.seed)
    history = []
    for _ in ctx.progress(range(cfg.epochs), desc="aligner epochs"):
        total = 0.0
        for batch in DataLoader(data, batch_size=cfg.batch_size, shuffle=True, generator=gen):
            scores, g = model(batch.x, batch.edge_index, batch.edge_attr, batch.batch, batch.q)
            loss = cfg.kl_weight * kl_node_loss(scores, batch.target, batch.batch)
            if len(g) > 1:
                loss = loss + cfg.contrastive_weight * info_nce(g, batch.reasoning)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(g)
        history.append(total / len(data))
    model.eval()
    return model, history


def prune(model, item: dict[str, Any], keep_ratio: float) -> set[int]:
    """The retrieved nodes the aligner ranks in the top ``keep_ratio`` (at least two)."""
    import torch

    keep = sorted(item["retrieved"])
    data = to_data(item)
    with torch.no_grad():
        scores, _ = model(data.x, data.edge_index, data.edge_attr, torch.zeros(len(keep), dtype=torch.long), data.q)
    n = max(2, int(np.ceil(keep_ratio * len(keep))))
    return {keep[i] for i in np.argsort(-scores.numpy())[:n]}
