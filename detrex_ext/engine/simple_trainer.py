"""detectron2's ``SimpleTrainer`` and ``AMPTrainer``: one optimizer step per batch, metrics
gathered to rank 0, for code written against detectron2 (e.g. detrex's ``train_net.py``
subclasses ``SimpleTrainer``).

``tools/train_net.py`` uses ``Trainer`` (``train_loop``), which adds gradient clipping and
accumulation, bf16, a loss check before the step, and exact resume.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from detrex_ext.utils import comm
from detrex_ext.utils.events import get_event_storage

from .train_loop import TrainerBase

__all__ = ["AMPTrainer", "SimpleTrainer"]

logger = logging.getLogger(__name__)


class SimpleTrainer(TrainerBase):
    """Each step: next batch, ``losses = model(batch)`` (a dict, or one tensor), backward,
    ``after_backward`` hooks, metrics, ``optimizer.step()``.

    Args:
        model: returns a dict of scalar losses (or one tensor) in training mode.
        data_loader: an iterable of batches.
        optimizer: a torch optimizer.
        gather_metric_period: gather and write the metrics every this many iterations.
        zero_grad_before_forward: zero the gradients before the forward (else after it).
        async_write_metrics: write the metrics in a background thread.
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable,
        optimizer: torch.optim.Optimizer,
        gather_metric_period: int = 1,
        zero_grad_before_forward: bool = False,
        async_write_metrics: bool = False,
    ) -> None:
        super().__init__()
        model.train()
        self.model = model
        self.data_loader = data_loader
        self._data_loader_iter_obj = None
        self.optimizer = optimizer
        self.gather_metric_period = gather_metric_period
        self.zero_grad_before_forward = zero_grad_before_forward
        self.async_write_metrics = async_write_metrics
        # one worker: metrics are written in the order they were submitted
        self.concurrent_executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    @property
    def _data_loader_iter(self):
        if self._data_loader_iter_obj is None:
            self._data_loader_iter_obj = iter(self.data_loader)
        return self._data_loader_iter_obj

    def reset_data_loader(self, data_loader_builder: Callable[[], Iterable]) -> None:
        """Replace the data loader with ``data_loader_builder()`` (iterated from its start)."""
        del self.data_loader
        self.data_loader = data_loader_builder()
        self._data_loader_iter_obj = None

    def _forward(self, data: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        loss_dict = self.model(data)
        if isinstance(loss_dict, torch.Tensor):
            return {"total_loss": loss_dict}, loss_dict
        return loss_dict, sum(loss_dict.values())

    def run_step(self) -> None:
        assert self.model.training, f"[{type(self).__name__}] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        loss_dict, losses = self._forward(data)
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        losses.backward()
        self.after_backward()
        self._submit_metrics(loss_dict, data_time)
        self.optimizer.step()

    def _submit_metrics(self, loss_dict: Mapping[str, torch.Tensor], data_time: float) -> None:
        if self.async_write_metrics:
            self.concurrent_executor.submit(
                self._write_metrics, loss_dict, data_time, iter=self.iter
            )
        else:
            self._write_metrics(loss_dict, data_time)

    def _write_metrics(
        self,
        loss_dict: Mapping[str, torch.Tensor],
        data_time: float,
        prefix: str = "",
        iter: int | None = None,
    ) -> None:
        iteration = self.iter if iter is None else iter
        if (iteration + 1) % self.gather_metric_period == 0:
            SimpleTrainer.write_metrics(loss_dict, data_time, iteration, prefix)

    @staticmethod
    def write_metrics(
        loss_dict: Mapping[str, torch.Tensor],
        data_time: float,
        cur_iter: int,
        prefix: str = "",
    ) -> None:
        """Put this rank's ``rank_data_time``; on rank 0 put ``data_time`` (slowest rank), the
        losses averaged over ranks and their sum ``<prefix>total_loss``.

        Raises:
            FloatingPointError: the total loss is not finite.
        """
        metrics = {k: v.detach().cpu().item() for k, v in loss_dict.items()}
        metrics["data_time"] = data_time
        storage = get_event_storage()
        storage.put_scalar("rank_data_time", data_time, cur_iter=cur_iter)
        gathered = comm.gather(metrics)
        if not comm.is_main_process():
            return
        storage.put_scalar(
            "data_time", max(m.pop("data_time") for m in gathered), cur_iter=cur_iter
        )
        averaged = {k: float(np.mean([m[k] for m in gathered])) for k in gathered[0]}
        total = sum(averaged.values())
        if not np.isfinite(total):
            raise FloatingPointError(
                f"Loss became infinite or NaN at iteration={cur_iter}! loss_dict = {averaged}"
            )
        storage.put_scalar(f"{prefix}total_loss", total, cur_iter=cur_iter)
        if len(averaged) > 1:
            storage.put_scalars(cur_iter=cur_iter, **averaged)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.optimizer.load_state_dict(state_dict["optimizer"])

    def after_train(self) -> None:
        super().after_train()
        self.concurrent_executor.shutdown(wait=True)


class AMPTrainer(SimpleTrainer):
    """``SimpleTrainer`` with the forward under ``torch.autocast(precision)`` and a gradient
    scaler. Runs on the model's device (CPU or CUDA; detectron2's needs CUDA).

    Args:
        model, data_loader, optimizer, gather_metric_period, zero_grad_before_forward,
            async_write_metrics: as ``SimpleTrainer``.
        grad_scaler: default ``torch.amp.GradScaler`` of the model's device type.
        precision: autocast dtype (``torch.float16`` or ``torch.bfloat16``).
        log_grad_scaler: put the scale as ``[metric]grad_scaler`` every step.
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable,
        optimizer: torch.optim.Optimizer,
        gather_metric_period: int = 1,
        zero_grad_before_forward: bool = False,
        grad_scaler: torch.amp.GradScaler | None = None,
        precision: torch.dtype = torch.float16,
        log_grad_scaler: bool = False,
        async_write_metrics: bool = False,
    ) -> None:
        if isinstance(model, DataParallel) or (
            isinstance(model, DistributedDataParallel)
            and model.device_ids
            and len(model.device_ids) > 1
        ):
            raise ValueError("AMPTrainer does not support single-process multi-device training")
        super().__init__(
            model,
            data_loader,
            optimizer,
            gather_metric_period,
            zero_grad_before_forward,
            async_write_metrics,
        )
        self.device_type = next(iter(model.parameters()), torch.empty(0)).device.type
        self.grad_scaler = grad_scaler or torch.amp.GradScaler(self.device_type)
        self.precision = precision
        self.log_grad_scaler = log_grad_scaler

    def run_step(self) -> None:
        assert self.model.training, "[AMPTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with torch.autocast(self.device_type, dtype=self.precision):
            loss_dict, losses = self._forward(data)
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        self.grad_scaler.scale(losses).backward()
        if self.log_grad_scaler:
            get_event_storage().put_scalar("[metric]grad_scaler", self.grad_scaler.get_scale())
        self.after_backward()
        self._submit_metrics(loss_dict, data_time)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
