"""The training loop: ``HookBase``, ``TrainerBase`` and the one ``Trainer`` used by train_net.

``Trainer`` merges detectron2's ``SimpleTrainer``/``AMPTrainer`` and detrex's ``Trainer``: AMP in
bf16 or fp16 (a ``torch.amp.GradScaler`` only for fp16), gradient clipping, gradient accumulation,
and a check that stops on a non-finite loss naming the term. It is device-agnostic: it runs on
whatever device the model's parameters are on (CPU or CUDA).

Exact resume: when ``iteration_seed`` is set, every iteration starts by reseeding python, numpy and
torch from ``(iteration_seed, rank, iteration)``, so the random numbers drawn in iteration ``i``
(dropout, denoising noise, point sampling, main-process augmentation) do not depend on what ran
before, and a resumed run draws the same ones as an uninterrupted run. The data order is restored
when the train loader implements ``state_dict()``/``load_state_dict()``; the trainer saves it in
its checkpoint state (``"data_loader"``). ``train_net`` wraps loaders built by
``build_detection_train_loader`` (which takes ``start_iter``) in ``ResumableLoader`` to get that,
see ``detrex_ext.engine.resumable_loader``. The loader must not draw from the global generators
once the iteration is seeded (a lazily built loader does so at its first batch, which a resumed run
takes at another iteration): ``build_detection_train_loader`` seeds its own generators from the data
seed and the stream position, and ``ResumableLoader`` builds inside ``preserved_random_state``.
The recent loss history is checkpointed too, so the smoothed values in ``metrics.json`` continue
as in an uninterrupted run.

Resume is bit-exact on CPU. On CUDA, kernels with non-deterministic reductions (atomics in
``grid_sample``/``index_add`` backward) make two runs differ slightly whether or not they resume.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from detrex_ext.utils import comm
from detrex_ext.utils.env import derive_seed
from detrex_ext.utils.events import EventStorage

__all__ = ["HookBase", "TrainerBase", "Trainer", "resolve_amp_dtype"]

logger = logging.getLogger(__name__)


class HookBase:
    """Base class of training hooks; every method is optional.

    Call order in ``TrainerBase.train``::

        hook.before_train()
        for iter in range(start_iter, max_iter):
            hook.before_step()
            trainer.run_step()   # calls hook.after_backward() between backward and step
            hook.after_step()
        iter += 1
        hook.after_train()

    ``self.trainer`` is a weak proxy to the trainer, set by ``register_hooks``. A hook with state
    to checkpoint implements ``state_dict``/``load_state_dict``.
    """

    trainer: TrainerBase

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_backward(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        pass


class TrainerBase:
    """Iterates ``run_step`` between hook calls inside an ``EventStorage``.

    Attributes:
        iter: the current iteration (0-based); ``max_iter`` after a finished run.
        start_iter, max_iter: the range given to ``train``.
        storage: the run's ``EventStorage``.
        iteration_seed: run seed for per-iteration reseeding (None disables it).
    """

    def __init__(self, iteration_seed: int | None = None) -> None:
        self._hooks: list[HookBase] = []
        self.iter = 0
        self.start_iter = 0
        self.max_iter = 0
        self.storage: EventStorage
        self.iteration_seed = iteration_seed
        self._resumed_history: dict | None = None

    def register_hooks(self, hooks: Iterable[HookBase | None]) -> None:
        """Append hooks (``None`` entries are skipped); they run in the given order."""
        hooks = [h for h in hooks if h is not None]
        for hook in hooks:
            if not isinstance(hook, HookBase):
                raise TypeError(f"Hooks must subclass HookBase, got {type(hook).__name__}")
            # a proxy avoids a reference cycle trainer -> hook -> trainer
            hook.trainer = weakref.proxy(self)
        self._hooks.extend(hooks)

    def train(self, start_iter: int, max_iter: int) -> None:
        """Run iterations ``start_iter .. max_iter - 1``."""
        logger.info(f"Starting training from iteration {start_iter}")
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        with EventStorage(start_iter) as self.storage:
            if self._resumed_history:
                self.storage.load_history_state(self._resumed_history)
                self._resumed_history = None
            try:
                self.before_train()
                for self.iter in range(start_iter, max_iter):
                    self.seed_iteration()
                    self.before_step()
                    self.run_step()
                    self.after_step()
                # after a finished loop `iter` equals max_iter (after_train hooks rely on it);
                # when the loop body raised, it stays at the failed iteration
                self.iter += 1
            except Exception:
                logger.exception("Exception during training:")
                raise
            finally:
                self.after_train()

    def seed_iteration(self) -> None:
        """Reseed python/numpy/torch from ``(iteration_seed, rank, iter)`` (no-op when unset)."""
        if self.iteration_seed is None:
            return
        seed = derive_seed(self.iteration_seed, comm.get_rank(), self.iter)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def before_train(self) -> None:
        for hook in self._hooks:
            hook.before_train()

    def after_train(self) -> None:
        self.storage.iter = self.iter
        for hook in self._hooks:
            hook.after_train()

    def before_step(self) -> None:
        self.storage.iter = self.iter
        for hook in self._hooks:
            hook.before_step()

    def after_backward(self) -> None:
        for hook in self._hooks:
            hook.after_backward()

    def after_step(self) -> None:
        for hook in self._hooks:
            hook.after_step()

    def run_step(self) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        state: dict[str, Any] = {"iteration": self.iter}
        if self.iteration_seed is not None:
            state["iteration_seed"] = self.iteration_seed
        hook_states = {}
        for hook in self._hooks:
            hook_state = hook.state_dict()
            if hook_state:
                name = type(hook).__qualname__
                if name in hook_states:
                    # two hooks of one type cannot be told apart when loading
                    continue
                hook_states[name] = hook_state
        if hook_states:
            state["hooks"] = hook_states
        if getattr(self, "storage", None) is not None:
            # recent loss values, so that smoothed logs continue seamlessly after a resume
            state["storage_history"] = self.storage.history_state()
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.iter = int(state_dict["iteration"])
        if "iteration_seed" in state_dict:
            self.iteration_seed = int(state_dict["iteration_seed"])
        self._resumed_history = state_dict.get("storage_history")
        for name, value in state_dict.get("hooks", {}).items():
            for hook in self._hooks:
                if type(hook).__qualname__ == name:
                    hook.load_state_dict(value)
                    break
            else:
                logger.warning(f"Cannot find a hook {name!r}; its checkpointed state is ignored.")


def resolve_amp_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"bf16"``/``"bfloat16"``/``torch.bfloat16`` or ``"fp16"``/``"float16"``/``torch.float16``."""
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    names.update({"fp16": torch.float16, "float16": torch.float16, "half": torch.float16})
    if isinstance(dtype, torch.dtype) and dtype in (torch.bfloat16, torch.float16):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in names:
        return names[dtype.lower()]
    raise ValueError(f"train.amp.dtype must be 'bf16' or 'fp16', got {dtype!r}")


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


class Trainer(TrainerBase):
    """One optimizer step per iteration over ``grad_accum_steps`` batches of ``data_loader``.

    Args:
        model: returns a dict of scalar losses (or one scalar tensor) in training mode; may be
            wrapped in ``DistributedDataParallel``.
        data_loader: an iterable of batches (``list[dict]``), infinite or long enough.
        optimizer: a torch optimizer over the model's parameters.
        amp_enabled: run forward passes under ``torch.autocast``.
        amp_dtype: ``"bf16"`` or ``"fp16"``; fp16 uses a ``GradScaler``.
        clip_grad_params: kwargs of ``torch.nn.utils.clip_grad_norm_`` (``max_norm``,
            ``norm_type``), or None for no clipping.
        grad_accum_steps: batches whose gradients are summed (losses divided by this) before one
            optimizer step.
        grad_scaler: a custom fp16 scaler (default ``torch.amp.GradScaler(device_type)``).
        iteration_seed: see the module docstring.
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable,
        optimizer: torch.optim.Optimizer,
        *,
        amp_enabled: bool = False,
        amp_dtype: str | torch.dtype = "fp16",
        clip_grad_params: Mapping[str, Any] | None = None,
        grad_accum_steps: int = 1,
        grad_scaler: torch.amp.GradScaler | None = None,
        iteration_seed: int | None = None,
    ) -> None:
        super().__init__(iteration_seed=iteration_seed)
        model.train()
        if grad_accum_steps < 1:
            raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}")
        self.model = model
        self.data_loader = data_loader
        self.optimizer = optimizer
        self.device_type = _model_device(model).type
        self.amp_enabled = bool(amp_enabled)
        self.amp_dtype = resolve_amp_dtype(amp_dtype)
        self.clip_grad_params = dict(clip_grad_params) if clip_grad_params else None
        self.grad_accum_steps = int(grad_accum_steps)
        if self.amp_enabled and self.amp_dtype == torch.float16 and grad_scaler is None:
            grad_scaler = torch.amp.GradScaler(self.device_type)
        self.grad_scaler = grad_scaler if self.amp_enabled else None
        self._data_loader_iter_obj = None

    @property
    def _data_loader_iter(self):
        # created on first use, so that a resumed loader state is loaded before iteration starts
        if self._data_loader_iter_obj is None:
            self._data_loader_iter_obj = iter(self.data_loader)
        return self._data_loader_iter_obj

    def _accumulation_context(self, micro_step: int):
        """Skip DDP's gradient all-reduce on all but the last accumulated batch."""
        last = micro_step == self.grad_accum_steps - 1
        if not last and isinstance(self.model, DistributedDataParallel):
            return self.model.no_sync()
        return contextlib.nullcontext()

    def run_step(self) -> None:
        assert self.model.training, "Trainer: the model was switched to eval mode"
        self.optimizer.zero_grad(set_to_none=True)
        loss_sums: dict[str, float] = {}
        data_time = 0.0
        for micro_step in range(self.grad_accum_steps):
            start = time.perf_counter()
            data = next(self._data_loader_iter)
            data_time += time.perf_counter() - start
            with self._accumulation_context(micro_step):
                with torch.autocast(
                    self.device_type, dtype=self.amp_dtype, enabled=self.amp_enabled
                ):
                    loss_dict = self.model(data)
                    if isinstance(loss_dict, torch.Tensor):
                        loss_dict = {"total_loss": loss_dict}
                    losses = sum(loss_dict.values())
                values = self._checked_loss_values(loss_dict)
                losses = losses / self.grad_accum_steps
                if self.grad_scaler is not None:
                    self.grad_scaler.scale(losses).backward()
                else:
                    losses.backward()
            for name, value in values.items():
                loss_sums[name] = loss_sums.get(name, 0.0) + value / self.grad_accum_steps
        self.after_backward()
        if self.clip_grad_params is not None:
            if self.grad_scaler is not None:
                self.grad_scaler.unscale_(self.optimizer)
            self._clip_grads()
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        self._write_metrics(loss_sums, data_time)

    def _checked_loss_values(self, loss_dict: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Loss values as floats (one device sync); raises before backward if any is not finite."""
        names = list(loss_dict)
        stacked = torch.stack([loss_dict[n].detach().float().reshape(()) for n in names]).cpu()
        values = dict(zip(names, stacked.tolist()))
        bad = [n for n in names if not np.isfinite(values[n])]
        if bad:
            listing = ", ".join(f"{n}={values[n]}" for n in names)
            raise FloatingPointError(
                f"Loss became infinite or NaN at iteration={self.iter} in term(s) "
                f"{', '.join(repr(n) for n in bad)} (rank {comm.get_rank()}). All terms: "
                f"{listing}. Training stopped before the optimizer step. Common causes: a "
                "learning rate too high for this batch size (lower optimizer.lr or enable "
                "train.clip_grad), fp16 overflow (try train.amp.dtype=bf16), or an invalid target "
                "in the batch."
            )
        return values

    def _clip_grads(self) -> None:
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        params = [p for p in params if p.grad is not None]
        if params:
            total_norm = torch.nn.utils.clip_grad_norm_(params, **self.clip_grad_params)
            self.storage.put_scalar("grad_norm", float(total_norm))

    def _write_metrics(self, loss_values: Mapping[str, float], data_time: float) -> None:
        """Gather this iteration's losses and data time to rank 0 and put them in the storage:
        losses are averaged over ranks, ``data_time`` is the slowest rank's."""
        gathered = comm.gather({**loss_values, "data_time": data_time})
        if not comm.is_main_process():
            return
        self.storage.put_scalar("data_time", max(m.pop("data_time") for m in gathered))
        averaged = {k: float(np.mean([m[k] for m in gathered])) for k in gathered[0]}
        self.storage.put_scalar("total_loss", sum(averaged.values()))
        if len(averaged) > 1 or "total_loss" not in averaged:
            self.storage.put_scalars(**averaged)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["optimizer"] = self.optimizer.state_dict()
        if self.grad_scaler is not None:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        if callable(getattr(self.data_loader, "state_dict", None)):
            state["data_loader"] = self.data_loader.state_dict()
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.optimizer.load_state_dict(state_dict["optimizer"])
        if self.grad_scaler is not None:
            if "grad_scaler" in state_dict:
                self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
            else:
                logger.warning(
                    "The checkpoint has no grad scaler state (it was trained without fp16 AMP); "
                    "starting from a fresh GradScaler."
                )
        if "data_loader" in state_dict and callable(
            getattr(self.data_loader, "load_state_dict", None)
        ):
            self.data_loader.load_state_dict(state_dict["data_loader"])
            self._data_loader_iter_obj = None
        else:
            logger.warning(
                "The train data loader has no saved position (it does not implement "
                "state_dict()/load_state_dict()), so after resuming it starts its sequence over; "
                "the run continues correctly but is not a bit-exact replay."
            )
