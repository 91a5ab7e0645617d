"""Activation checkpointing that leaves training numerically unchanged.

A checkpointed module keeps only its inputs during the forward and runs again in the backward to
rebuild what its gradients need: activation memory is traded for one extra forward. Three things
keep the result identical to an unchecked run:

* ``torch.utils.checkpoint`` (non-reentrant) restores the RNG state before the recomputation, so
  dropout and stochastic depth draw the same numbers twice;
* batch norms in training mode normalise with batch statistics in both runs, but must update
  their running statistics only once: the recomputation's update is undone;
* nothing is checkpointed in eval mode or without autograd (there is nothing to save there).

The protocol: a module that can checkpoint itself has ``set_activation_checkpointing(enabled)``;
``set_activation_checkpointing(model, True)`` calls it on every such submodule.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator

import torch
import torch.utils.checkpoint
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "checkpointable_modules",
    "checkpoint_module",
    "maybe_checkpoint",
    "needs_checkpoint",
    "saved_activation_bytes",
    "set_activation_checkpointing",
]


@contextlib.contextmanager
def _running_stats_kept(module: nn.Module) -> Iterator[None]:
    """Batch norms of ``module`` end with the running statistics they had on entry.

    A training-mode batch norm normalises with the batch statistics, so its output does not
    depend on ``running_mean`` / ``running_var``; only their update is undone (the recomputation
    must save the same tensors as the first run, so the update itself cannot be switched off).
    """
    buffers = [
        buffer
        for m in module.modules()
        if isinstance(m, _BatchNorm) and m.training and m.track_running_stats
        for buffer in (m.running_mean, m.running_var, m.num_batches_tracked)
        if buffer is not None
    ]
    kept = [buffer.clone() for buffer in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, kept):
                buffer.copy_(value)


def needs_checkpoint(module: nn.Module, *inputs: torch.Tensor) -> bool:
    """True when checkpointing ``module(*inputs)`` can save memory: training, autograd on, and a
    gradient is needed (an input or a parameter of ``module`` requires it)."""
    if not (module.training and torch.is_grad_enabled()):
        return False
    if any(isinstance(x, torch.Tensor) and x.requires_grad for x in inputs):
        return True
    return any(p.requires_grad for p in module.parameters())


def checkpoint_module(module: nn.Module, *args, **kwargs):
    """``module(*args, **kwargs)`` with its activations recomputed in the backward.

    Non-reentrant ``torch.utils.checkpoint`` with the RNG state preserved; batch-norm running
    statistics are updated by the first run only. Non-tensor arguments (shapes, None) are fine.
    """
    return torch.utils.checkpoint.checkpoint(
        module,
        *args,
        use_reentrant=False,
        preserve_rng_state=True,
        context_fn=lambda: (contextlib.nullcontext(), _running_stats_kept(module)),
        **kwargs,
    )


def checkpointable_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The submodules of ``model`` (not ``model`` itself) that have
    ``set_activation_checkpointing``, by qualified name, in ``named_modules`` order."""
    return {
        name: module
        for name, module in model.named_modules()
        if module is not model and callable(getattr(module, "set_activation_checkpointing", None))
    }


def maybe_checkpoint(enabled: bool, module: nn.Module, *args):
    """``module(*args)``, checkpointed (``checkpoint_module``) when ``enabled`` and
    ``needs_checkpoint(module, *args)``: the one switch every checkpointing module uses."""
    if enabled and needs_checkpoint(module, *args):
        return checkpoint_module(module, *args)
    return module(*args)


def set_activation_checkpointing(model: nn.Module, enabled: bool = True) -> list[str]:
    """Call ``set_activation_checkpointing(enabled)`` on every submodule of ``model`` (not on
    ``model`` itself) that has it.

    Returns:
        The qualified names of the modules that were switched (empty when none supports it).
    """
    modules = checkpointable_modules(model)
    for module in modules.values():
        module.set_activation_checkpointing(enabled)
    return list(modules)


@contextlib.contextmanager
def saved_activation_bytes(
    model: nn.Module | None = None, part: Callable[[], str] | None = None
) -> Iterator[dict]:
    """Measure the activation memory a forward keeps for its backward (works on CPU).

    Inside the block, every tensor that autograd saves (including the inputs a checkpoint keeps)
    is recorded once per storage; the storages of ``model``'s parameters and buffers are not
    activations and are left out. Read ``result["bytes"]`` after the block; with ``part`` (a
    function naming the part of the model running now), ``result["by_part"]`` also splits the
    bytes by the part that first saved each storage.
    """
    weights = set()
    if model is not None:
        weights = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    storages: dict[int, tuple[str | None, int]] = {}
    result: dict = {"bytes": 0, "by_part": Counter()}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in weights and pointer not in storages:
            storages[pointer] = (part() if part is not None else None, storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield result
    result["bytes"] = sum(nbytes for _, nbytes in storages.values())
    if part is not None:
        for name, nbytes in storages.values():
            result["by_part"][name] += nbytes
