"""TorchRec plumbing: process group, sharding plan, DistributedModelParallel.

Embedding tables are built on the meta device, get a fused optimizer
(``apply_optimizer_in_backward``: the update happens inside the backward
pass of the FBGEMM kernel), and are sharded table-wise across ranks; the
dense part is wrapped in DDP by DMP. On CPU the fused kernel supports
Adagrad-family and SGD updates, not Adam; ``embedding_update="dense"`` keeps
the tables as replicated ordinary parameters instead (training/optim.py).
"""

from __future__ import annotations

import os
import socket
from typing import Any

import torch
import torch.distributed as dist
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.types import ShardingType
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

from training.optim import FUSED_EMBEDDING_OPTIMIZERS, check_fused_optimizer
from training.sparse import CTRModel, table_name

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> tuple[int, int]:
    """Join the gloo group torchrun describes, or form a group of one."""
    if not dist.is_initialized():
        rank = int(os.environ.get("RANK", 0))
        world = int(os.environ.get("WORLD_SIZE", 1))
        if world == 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
            # A group of one outside torchrun: its own free port, whatever an earlier group of this process (or of a
            # parent whose environment we inherited) left in MASTER_PORT -- parallel single-process
            # trainings (sweep cells) would otherwise race for the same port.
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ["MASTER_PORT"] = str(_free_port())
        dist.init_process_group("gloo", rank=rank, world_size=world)
    return dist.get_rank(), dist.get_world_size()


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: CTRModel, embedding_optimizer: str = "adagrad", embedding_lr: float = 0.05,
               embedding_update: str = "fused") -> DistributedModelParallel:
    """DMP over the model: ``fused`` tables get FBGEMM's in-backward optimizer and a table-wise
    plan; ``dense`` tables are replicated ordinary parameters (training/optim.py says when to use which)."""
    device = torch.device("cpu")
    if embedding_update == "fused":
        check_fused_optimizer(embedding_optimizer, device)
        apply_optimizer_in_backward(FUSED_EMBEDDING_OPTIMIZERS[embedding_optimizer], model.ebc.parameters(),
                                    {"lr": embedding_lr})
        sharding, kernel = ShardingType.TABLE_WISE, EmbeddingComputeKernel.FUSED
    elif embedding_update == "dense":
        sharding, kernel = ShardingType.DATA_PARALLEL, EmbeddingComputeKernel.DENSE
    else:
        raise ValueError(f"embedding_update must be fused or dense, got {embedding_update!r}")
    world = dist.get_world_size()
    constraints = {
        table_name(name): ParameterConstraints(sharding_types=[sharding.value], compute_kernels=[kernel.value])
        for name in model.names
    }
    planner = EmbeddingShardingPlanner(topology=Topology(world_size=world, compute_device="cpu"), constraints=constraints)
    sharders: list[Any] = [EmbeddingBagCollectionSharder()]
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    return DistributedModelParallel(model, device=device, plan=plan, sharders=sharders)


def dense_parameters(dmp: DistributedModelParallel) -> list[torch.nn.Parameter]:
    return [p for name, p in dmp.named_parameters() if ".ebc." not in f".{name}" and p.requires_grad]


def gather_full_state(dmp: DistributedModelParallel) -> dict[str, torch.Tensor] | None:
    """Unsharded state dict on rank 0 (None elsewhere): what export needs."""
    rank = dist.get_rank()
    full: dict[str, torch.Tensor] = {}
    for key, value in dmp.state_dict().items():
        if hasattr(value, "gather") and hasattr(value, "local_shards"):
            out = torch.empty(value.size(), dtype=value.dtype) if rank == 0 else None
            value.gather(dst=0, out=out)
            if rank == 0:
                full[key] = out
        elif rank == 0:
            full[key] = value.detach().clone()
    return full if rank == 0 else None
