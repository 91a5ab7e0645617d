"""``create_ddp_model``: wrap a model in ``DistributedDataParallel`` when there are several
processes (a no-op with one), on CUDA or on CPU (gloo)."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from detrex_ext.utils import comm

__all__ = ["create_ddp_model"]

logger = logging.getLogger(__name__)


def create_ddp_model(
    model: nn.Module, *, fp16_compression: bool = False, **kwargs: Any
) -> nn.Module:
    """Wrap ``model`` in DDP if the world size is above 1 (the keys of ``train.ddp``).

    Args:
        model: a model already moved to its device.
        fp16_compression: all-reduce gradients in fp16 (halves traffic; CUDA only).
        kwargs: ``DistributedDataParallel`` arguments, e.g. ``broadcast_buffers``,
            ``find_unused_parameters``. ``device_ids`` defaults to this process's local GPU when
            the model is on CUDA.
    """
    if comm.get_world_size() == 1:
        return model
    on_cuda = any(p.is_cuda for p in model.parameters())
    if on_cuda and "device_ids" not in kwargs:
        kwargs["device_ids"] = [comm.get_local_rank()]
    ddp = DistributedDataParallel(model, **kwargs)
    if fp16_compression:
        if not on_cuda:
            logger.warning("train.ddp.fp16_compression is ignored for a model on CPU")
        else:
            from torch.distributed.algorithms.ddp_comm_hooks import default as comm_hooks

            ddp.register_comm_hook(state=None, hook=comm_hooks.fp16_compress_hook)
    return ddp


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DDP/DataParallel wrapper (the model itself otherwise)."""
    wrappers = (DistributedDataParallel, torch.nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model
