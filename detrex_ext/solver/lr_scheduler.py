"""Learning-rate schedules: fvcore ``ParamScheduler`` multipliers driving a torch LR scheduler.

- :class:`WarmupParamScheduler`: a warmup stage (linear or constant) in front of any fvcore
  scheduler, as detectron2's; the warmup can be given in iterations (``warmup_iters`` with
  ``max_iter="${train.max_iter}"``) so it does not drift when ``train.max_iter`` changes.
- :class:`IterationMultiStepParamScheduler`: fvcore's ``MultiStepParamScheduler`` with absolute
  milestones that may lie past the end of a shortened run (they are then never reached).
- :class:`LRMultiplier`: ``lr = base_lr * multiplier(iter / max_iter)``; its state dict holds only
  ``base_lrs`` and ``last_epoch``, so resuming restores the position in the schedule.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    LinearParamScheduler,
    MultiStepParamScheduler,
    ParamScheduler,
)

__all__ = ["WarmupParamScheduler", "IterationMultiStepParamScheduler", "LRMultiplier"]

logger = logging.getLogger(__name__)


class WarmupParamScheduler(CompositeParamScheduler):
    """Warmup followed by ``scheduler``.

    The warmup goes from ``warmup_factor * scheduler(0)`` to the value where it hands over
    (``scheduler(warmup_length)``, or ``scheduler(0)`` with ``rescale_interval``); after it,
    ``scheduler`` is read at the global progress (or at the progress of the rest of the run with
    ``rescale_interval``).

    Args:
        scheduler: the main schedule.
        warmup_factor: multiplier of the first warmup value.
        warmup_length: warmup length as a fraction of training, in [0, 1) (detectron2 style); or
            give ``warmup_iters`` and ``max_iter`` instead.
        warmup_method: ``"linear"`` or ``"constant"``.
        rescale_interval: whether ``scheduler`` is stretched to start after the warmup.
        warmup_iters: warmup length in iterations (requires ``max_iter``).
        max_iter: total iterations of the run, e.g. ``"${train.max_iter}"`` in a config. A warmup
            longer than the run is shortened to end one iteration before the run does (with a
            warning), so short debugging runs still build.
    """

    def __init__(
        self,
        scheduler: ParamScheduler,
        warmup_factor: float,
        warmup_length: float | None = None,
        warmup_method: str = "linear",
        rescale_interval: bool = False,
        warmup_iters: int | None = None,
        max_iter: int | None = None,
    ):
        warmup_length = self._warmup_fraction(warmup_length, warmup_iters, max_iter)
        end_value = scheduler(0.0) if rescale_interval else scheduler(warmup_length)
        start_value = warmup_factor * scheduler(0.0)
        if warmup_method == "constant":
            warmup: ParamScheduler = ConstantParamScheduler(start_value)
        elif warmup_method == "linear":
            warmup = LinearParamScheduler(start_value, end_value)
        else:
            raise ValueError(f"unknown warmup_method {warmup_method!r}; use 'linear' or 'constant'")
        self.warmup_length = warmup_length
        super().__init__(
            [warmup, scheduler],
            interval_scaling=["rescaled", "rescaled" if rescale_interval else "fixed"],
            lengths=[warmup_length, 1 - warmup_length],
        )

    @staticmethod
    def _warmup_fraction(
        warmup_length: float | None, warmup_iters: int | None, max_iter: int | None
    ) -> float:
        if (warmup_length is None) == (warmup_iters is None):
            raise ValueError(
                "give the warmup either as warmup_length (fraction of training) or as "
                "warmup_iters with max_iter, not both and not neither"
            )
        if warmup_iters is not None:
            if max_iter is None or max_iter <= 0:
                raise ValueError(f"warmup_iters needs max_iter > 0 (got max_iter={max_iter!r})")
            if warmup_iters >= max_iter:
                logger.warning(
                    "warmup of %d iterations is not shorter than the run (max_iter=%d); "
                    "warming up for %d iterations instead",
                    warmup_iters,
                    max_iter,
                    max_iter - 1,
                )
                warmup_iters = max_iter - 1
            warmup_length = warmup_iters / max_iter
        if not 0 <= warmup_length < 1:
            raise ValueError(
                f"warmup_length must be in [0, 1) (a fraction of training), got {warmup_length}"
            )
        return warmup_length


class IterationMultiStepParamScheduler(MultiStepParamScheduler):
    """fvcore ``MultiStepParamScheduler`` with absolute milestones and a required ``num_updates``.

    ``values[i]`` holds from ``milestones[i-1]`` (iteration, inclusive) to ``milestones[i]``.
    Milestones at or after ``num_updates`` are never reached in this run, so they are dropped
    with their values instead of raising (fvcore raises), e.g. for ``train.max_iter=100``.

    Args:
        values: one value per stage, ``len(milestones) + 1`` of them.
        milestones: iterations where the value changes, increasing.
        num_updates: total iterations, e.g. ``"${train.max_iter}"`` in a config.
    """

    def __init__(self, values: Sequence[float], milestones: Sequence[int], num_updates: int):
        values, milestones = list(values), list(milestones)
        if len(values) != len(milestones) + 1:
            raise ValueError(
                f"{len(milestones)} milestones need {len(milestones) + 1} values, got {len(values)}"
            )
        reached = [m for m in milestones if m < num_updates]
        if len(reached) < len(milestones):
            logger.warning(
                "lr milestones %s are not before num_updates=%d, so they are never reached "
                "(the last value used is %s)",
                milestones[len(reached) :],
                num_updates,
                values[len(reached)],
            )
        values = values[: len(reached) + 1]
        # fvcore needs num_updates >= len(values); a run that short only sees the first stages.
        while len(values) > max(1, num_updates):
            values.pop()
            reached.pop()
        super().__init__(values=values, num_updates=num_updates, milestones=reached)


class LRMultiplier(torch.optim.lr_scheduler.LRScheduler):
    """Torch LR scheduler: ``lr_i = base_lr_i * multiplier(last_epoch / max_iter)``.

    Step it once per iteration, after ``optimizer.step()``. Past ``max_iter`` the multiplier keeps
    its value at the last iteration.

    Args:
        optimizer: the optimizer whose param groups it drives (``base_lrs`` = their initial lr).
        multiplier: an fvcore ``ParamScheduler`` over training progress in [0, 1).
        max_iter: total iterations.
        last_iter: -1 for a fresh run; the iteration already done when resuming.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        multiplier: ParamScheduler,
        max_iter: int,
        last_iter: int = -1,
    ):
        if not isinstance(multiplier, ParamScheduler):
            raise TypeError(
                f"LRMultiplier needs an fvcore ParamScheduler as multiplier, got "
                f"{type(multiplier).__name__}"
            )
        if max_iter <= 0:
            raise ValueError(f"max_iter must be positive, got {max_iter}")
        self._multiplier = multiplier
        self._max_iter = int(max_iter)
        super().__init__(optimizer, last_epoch=last_iter)

    def state_dict(self) -> dict:
        # The multiplier is rebuilt from the config; saving it would pickle arbitrary objects.
        return {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        self.base_lrs = list(state_dict["base_lrs"])
        self.last_epoch = int(state_dict["last_epoch"])
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_lr(self) -> list[float]:
        iteration = min(max(self.last_epoch, 0), self._max_iter - 1)
        factor = self._multiplier(iteration / self._max_iter)
        return [base_lr * factor for base_lr in self.base_lrs]
