"""Distributed-process helpers (detectron2's ``comm`` names) that also work without a process group.

Every function degrades to the single-process answer when ``torch.distributed`` is unavailable or
not initialised, so library code can call them unconditionally on CPU.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

_LOCAL_PROCESS_GROUP: dist.ProcessGroup | None = None
# The gloo group that NCCL runs use to gather Python objects; created on first use.
_NCCL_RUN_CPU_GROUP: dist.ProcessGroup | None = None


def is_dist_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist_initialized() else 0


def set_local_process_group(group: dist.ProcessGroup | None) -> None:
    """Record the group of processes on this machine (``launch`` creates it)."""
    global _LOCAL_PROCESS_GROUP
    _LOCAL_PROCESS_GROUP = group


def get_local_rank() -> int:
    """Rank of this process on its machine: the local group's rank, else ``LOCAL_RANK``, else 0."""
    if not is_dist_initialized():
        return 0
    if _LOCAL_PROCESS_GROUP is not None:
        return dist.get_rank(group=_LOCAL_PROCESS_GROUP)
    return int(os.environ.get("LOCAL_RANK", 0))


def get_local_size() -> int:
    """Number of processes on this machine."""
    if not is_dist_initialized():
        return 1
    if _LOCAL_PROCESS_GROUP is not None:
        return dist.get_world_size(group=_LOCAL_PROCESS_GROUP)
    return int(os.environ.get("LOCAL_WORLD_SIZE", get_world_size()))


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes; a no-op with one process."""
    if get_world_size() == 1:
        return
    if dist.get_backend() == dist.Backend.NCCL and torch.cuda.is_available():
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def _cpu_group() -> dist.ProcessGroup:
    """A gloo group for gathering Python objects, so NCCL runs never move pickles through GPUs."""
    global _NCCL_RUN_CPU_GROUP
    if dist.get_backend() != dist.Backend.NCCL:
        return dist.group.WORLD
    if _NCCL_RUN_CPU_GROUP is None:
        _NCCL_RUN_CPU_GROUP = dist.new_group(backend="gloo")
    return _NCCL_RUN_CPU_GROUP


def destroy_process_group() -> None:
    """Tear down the default process group and every group this module holds.

    Use it instead of ``torch.distributed.destroy_process_group``: a group still referenced from
    Python outlives that call, and its gloo worker threads then run into interpreter shutdown,
    which aborts the process ("terminate called without an active exception") now and then.
    """
    global _NCCL_RUN_CPU_GROUP
    set_local_process_group(None)
    _NCCL_RUN_CPU_GROUP = None
    if is_dist_initialized():
        dist.destroy_process_group()


def all_gather(data: Any, group: dist.ProcessGroup | None = None) -> list[Any]:
    """Gather a picklable object from every rank.

    Returns:
        A list with one entry per rank, in rank order (``[data]`` with one process).
    """
    if get_world_size() == 1:
        return [data]
    group = group if group is not None else _cpu_group()
    output: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(output, data, group=group)
    return output


def gather(data: Any, dst: int = 0, group: dist.ProcessGroup | None = None) -> list[Any]:
    """Gather a picklable object on rank ``dst``.

    Returns:
        On ``dst``: one entry per rank, in rank order. On other ranks: an empty list.
    """
    if get_world_size() == 1:
        return [data]
    group = group if group is not None else _cpu_group()
    rank = dist.get_rank()
    output: list[Any] | None = [None] * dist.get_world_size(group) if rank == dst else None
    dist.gather_object(data, output, dst=dst, group=group)
    return output if rank == dst else []


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks in place and return it (unchanged with one process)."""
    if get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def reduce_dict(
    input_dict: dict[str, torch.Tensor], average: bool = True
) -> dict[str, torch.Tensor]:
    """Reduce scalar tensors of the same keys across ranks; the result is meaningful on rank 0.

    Args:
        input_dict: name -> scalar tensor, the same keys on every rank.
        average: divide the sum by the world size.
    """
    world_size = get_world_size()
    if world_size == 1:
        return input_dict
    with torch.no_grad():
        names = sorted(input_dict.keys())
        values = torch.stack([input_dict[k] for k in names], dim=0)
        dist.reduce(values, dst=0)
        if dist.get_rank() == 0 and average:
            values /= world_size
        return dict(zip(names, values))


def shared_random_seed() -> int:
    """A random int in [0, 2**31) that is identical on every rank (rank 0 draws it)."""
    seed = int(np.random.randint(2**31))
    return all_gather(seed)[0]
