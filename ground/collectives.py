"""torch.distributed collectives that degrade to the single-process case (no process group).

Models call these inside their forward (SlotFA gathers prototypes, SMTC sums statistics); the
process group itself is set up by :mod:`utils.distributed`.
"""
from __future__ import annotations

from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def is_initialized() -> bool:
    """Whether a torch.distributed process group is running."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the group (1 without one)."""
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a group)."""
    return dist.get_rank() if is_initialized() else 0


def is_main() -> bool:
    """True on the process that writes (rank 0), and in every single-process run."""
    return rank() == 0


def _comm_device() -> torch.device:
    """Tensors for collectives live on the GPU with NCCL, on the CPU with gloo."""
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (returned on the tensor's original device, same dtype)."""
    if world_size() == 1:
        return values
    buffer = values.detach().to(_comm_device(), copy=True)
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    return buffer.to(values.device)


def all_reduce_max(values: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over ranks (e.g. 'any rank wants to stop')."""
    if world_size() == 1:
        return values
    buffer = values.detach().to(_comm_device(), copy=True)
    dist.all_reduce(buffer, op=dist.ReduceOp.MAX)
    return buffer.to(values.device)


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average a dict of floats over ranks (same keys on every rank), e.g. logged losses."""
    if world_size() == 1 or not values:
        return values
    keys = sorted(values)
    total = all_reduce_sum(torch.tensor([values[k] for k in keys], dtype=torch.float64))
    return {k: float(v) / world_size() for k, v in zip(keys, total.tolist())}


def all_gather_objects(obj: T) -> list[T]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` for a single process."""
    if world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


@torch.no_grad()
def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0 (no gradient; equal shapes per rank)."""
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def barrier() -> None:
    """Wait for every rank (no-op for one process)."""
    if world_size() > 1:
        dist.barrier()
