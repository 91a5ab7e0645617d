"""Training hooks with detectron2's names and timing.

Iteration ``i`` is 0-based; every hook acts in ``after_step`` on ``(i + 1) % period == 0``:

- ``IterationTimer``: puts ``time`` (seconds of ``run_step``) after a few warm-up iterations.
- ``LRScheduler``: puts ``lr`` then steps ``LRMultiplier`` (lr = base_lr * multiplier(iter/max_iter)).
- ``PeriodicCheckpointer``: ``model_{i:07d}.pth``, ``model_final.pth`` at the last iteration.
- ``EvalHook``: evaluates every ``eval_period`` (not on the last iteration) and after training.
- ``PeriodicWriter``: writes every ``period``, on the last iteration and once after training.

``BestCheckpointer`` (``best_checkpointer``) saves the best weights by an evaluation metric.
The EMA hook lives in ``detrex_ext.engine.ema``.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch
from fvcore.common.checkpoint import PeriodicCheckpointer as _PeriodicCheckpointer
from fvcore.common.param_scheduler import ParamScheduler
from fvcore.common.timer import Timer

from detrex_ext.utils import comm
from detrex_ext.utils.writers import EventWriter

from .best_checkpointer import BestCheckpointer
from .train_loop import HookBase

__all__ = [
    "BestCheckpointer",
    "CallbackHook",
    "IterationTimer",
    "LRScheduler",
    "PeriodicCheckpointer",
    "EvalHook",
    "PeriodicWriter",
]

logger = logging.getLogger(__name__)


class CallbackHook(HookBase):
    """A hook built from plain functions, each called with the trainer."""

    def __init__(
        self,
        *,
        before_train: Callable | None = None,
        after_train: Callable | None = None,
        before_step: Callable | None = None,
        after_step: Callable | None = None,
    ) -> None:
        self._before_train = before_train
        self._after_train = after_train
        self._before_step = before_step
        self._after_step = after_step

    def before_train(self) -> None:
        if self._before_train:
            self._before_train(self.trainer)

    def after_train(self) -> None:
        if self._after_train:
            self._after_train(self.trainer)

    def before_step(self) -> None:
        if self._before_step:
            self._before_step(self.trainer)

    def after_step(self) -> None:
        if self._after_step:
            self._after_step(self.trainer)


class IterationTimer(HookBase):
    """Time each iteration (``run_step`` only, hooks excluded) and report the total at the end.

    Args:
        warmup_iter: iterations after the start (or a resume) not timed, since they include
            one-off costs (allocator warm-up, loader start).
    """

    def __init__(self, warmup_iter: int = 3) -> None:
        self._warmup_iter = warmup_iter
        self._step_timer = Timer()
        self._start_time = time.perf_counter()
        self._total_timer = Timer()

    def before_train(self) -> None:
        self._start_time = time.perf_counter()
        self._total_timer.reset()
        self._total_timer.pause()

    def after_train(self) -> None:
        total_time = time.perf_counter() - self._start_time
        timed_time = self._total_timer.seconds()
        hook_time = total_time - timed_time
        num_iter = self.trainer.storage.iter + 1 - self.trainer.start_iter - self._warmup_iter
        if num_iter > 0 and timed_time > 0:
            logger.info(
                f"Overall training speed: {num_iter} iterations in "
                f"{datetime.timedelta(seconds=int(timed_time))} "
                f"({timed_time / num_iter:.4f} s / it)"
            )
        logger.info(
            f"Total training time: {datetime.timedelta(seconds=int(total_time))} "
            f"({datetime.timedelta(seconds=int(hook_time))} on hooks)"
        )

    def before_step(self) -> None:
        self._step_timer.reset()
        self._total_timer.resume()

    def after_step(self) -> None:
        iterations_done = self.trainer.storage.iter - self.trainer.start_iter + 1
        if iterations_done >= self._warmup_iter:
            self.trainer.storage.put_scalars(time=self._step_timer.seconds())
        else:
            self._start_time = time.perf_counter()
            self._total_timer.reset()
        self._total_timer.pause()


def _best_param_group_id(optimizer: torch.optim.Optimizer) -> int:
    """The param group whose lr is logged: the largest group, or else the most common lr."""
    largest = max(len(g["params"]) for g in optimizer.param_groups)
    if largest == 1:
        most_common_lr = Counter(g["lr"] for g in optimizer.param_groups).most_common(1)[0][0]
        return next(i for i, g in enumerate(optimizer.param_groups) if g["lr"] == most_common_lr)
    return next(i for i, g in enumerate(optimizer.param_groups) if len(g["params"]) == largest)


class LRScheduler(HookBase):
    """Log the lr and step a torch lr scheduler after every iteration.

    Args:
        optimizer: defaults to ``trainer.optimizer``.
        scheduler: a torch ``LRScheduler``, or an fvcore ``ParamScheduler`` (the config's
            ``lr_multiplier``), which is wrapped in ``detrex_ext.solver.LRMultiplier`` at
            ``before_train`` with ``last_iter = trainer.iter - 1``. The schedule is thus a pure
            function of the iteration and needs no state on resume.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | ParamScheduler | None = None,
    ) -> None:
        self._optimizer = optimizer
        self._scheduler = scheduler
        self._best_param_group_id = 0

    def before_train(self) -> None:
        self._optimizer = self._optimizer or self.trainer.optimizer
        if isinstance(self._scheduler, ParamScheduler):
            from detrex_ext.solver import LRMultiplier

            self._scheduler = LRMultiplier(
                self._optimizer,
                self._scheduler,
                self.trainer.max_iter,
                last_iter=self.trainer.iter - 1,
            )
        self._best_param_group_id = _best_param_group_id(self._optimizer)

    @property
    def scheduler(self):
        return self._scheduler

    def after_step(self) -> None:
        lr = self._optimizer.param_groups[self._best_param_group_id]["lr"]
        self.trainer.storage.put_scalar("lr", lr, smoothing_hint=False)
        self._scheduler.step()

    def state_dict(self) -> dict:
        if isinstance(self._scheduler, torch.optim.lr_scheduler.LRScheduler):
            return self._scheduler.state_dict()
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        # a ParamScheduler is rebuilt from the iteration in before_train; only a scheduler that
        # already is a torch LRScheduler carries state of its own
        if isinstance(self._scheduler, torch.optim.lr_scheduler.LRScheduler):
            logger.info("Loading scheduler from state_dict ...")
            self._scheduler.load_state_dict(state_dict)


class PeriodicCheckpointer(_PeriodicCheckpointer, HookBase):
    """fvcore's ``PeriodicCheckpointer`` as a hook: ``model_{iter:07d}.pth`` when
    ``(iter + 1) % period == 0`` and ``model_final.pth`` at ``max_iter - 1``; ``max_to_keep``
    deletes older periodic files (never ``model_final``).

    Before saving it flushes the trainer's ``PeriodicWriter`` hooks, so that the metrics of every
    iteration up to the checkpoint are on disk: a run killed after the save resumes after that
    iteration and would never write them again.
    """

    def before_train(self) -> None:
        self.max_iter = self.trainer.max_iter

    def after_step(self) -> None:
        iteration = self.trainer.iter
        if (iteration + 1) % self.period == 0 or iteration >= self.max_iter - 1:
            for hook in self.trainer._hooks:
                if isinstance(hook, PeriodicWriter):
                    hook.write()
        self.step(iteration)


class EvalHook(HookBase):
    """Run ``eval_function`` every ``eval_period`` iterations and after the last one.

    Results (``{task: {metric: value}}``) are flattened to ``task/metric`` scalars in the event
    storage. Must be registered on every rank: evaluation is distributed.

    Args:
        eval_period: 0 evaluates only after training.
        eval_function: returns the results dict (may be empty on non-main ranks).
        eval_after_train: also evaluate once training reached ``max_iter``.
    """

    def __init__(
        self, eval_period: int, eval_function: Callable[[], Any], eval_after_train: bool = True
    ) -> None:
        self._period = eval_period
        self._func = eval_function
        self._eval_after_train = eval_after_train

    def _do_eval(self) -> None:
        from detrex_ext.evaluation import flatten_results_dict

        results = self._func()
        if results:
            if not isinstance(results, dict):
                raise TypeError(f"Eval function must return a dict, got {type(results).__name__}")
            flattened = flatten_results_dict(results)
            for name, value in flattened.items():
                try:
                    flattened[name] = float(value)
                except (TypeError, ValueError) as e:
                    raise ValueError(
                        "[EvalHook] eval_function should return a nested dict of float. "
                        f"Got '{name}: {value}' instead."
                    ) from e
            self.trainer.storage.put_scalars(**flattened, smoothing_hint=False)
        # evaluation may take different time on different ranks; realign before training on
        comm.synchronize()

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if (
            self._period > 0
            and next_iter % self._period == 0
            and next_iter != self.trainer.max_iter
        ):
            self._do_eval()

    def after_train(self) -> None:
        # a failed run leaves trainer.iter below max_iter - 1: no final evaluation then
        if self._eval_after_train and self.trainer.iter + 1 >= self.trainer.max_iter:
            self._do_eval()
        # the eval function may hold references to the model and data; release them
        del self._func


class PeriodicWriter(HookBase):
    """Call every writer's ``write()`` every ``period`` iterations, on the last iteration, and
    once more (then ``close()``) after training."""

    def __init__(self, writers: Sequence[EventWriter], period: int = 20) -> None:
        self._writers = list(writers)
        for writer in self._writers:
            if not isinstance(writer, EventWriter):
                raise TypeError(f"{writer!r} is not an EventWriter")
        self._period = period

    def write(self) -> None:
        """Write what every writer has not written yet, now."""
        for writer in self._writers:
            writer.write()

    def after_step(self) -> None:
        if (self.trainer.iter + 1) % self._period == 0 or (
            self.trainer.iter == self.trainer.max_iter - 1
        ):
            self.write()

    def after_train(self) -> None:
        for writer in self._writers:
            # values put by other after_train hooks (the final evaluation) are written here
            writer.write()
            writer.close()
