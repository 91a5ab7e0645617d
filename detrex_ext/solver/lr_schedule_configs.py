"""Config factories for ``lr_multiplier``: each returns a LazyCall node, not a scheduler.

Every schedule is a :class:`~detrex_ext.solver.lr_scheduler.WarmupParamScheduler` whose
``max_iter`` defaults to ``"${train.max_iter}"`` and whose inner scheduler reads
``num_updates="${..max_iter}"``, so milestones and warmup are absolute iterations that do not move
when ``train.max_iter`` is overridden. Names follow detrex's ``configs/common/common_schedule.py``.

Example (in a config file)::

    from detrex_ext.solver.lr_schedule_configs import multistep_lr_scheduler
    lr_multiplier = multistep_lr_scheduler(values=[1.0, 0.1, 0.01], milestones=[327778, 355092],
                                           warmup_steps=10, warmup_factor=1.0)
"""

from __future__ import annotations

from typing import Any, Sequence

from fvcore.common.param_scheduler import (
    ConstantParamScheduler,
    CosineParamScheduler,
    LinearParamScheduler,
    PolynomialDecayParamScheduler,
)
from omegaconf import DictConfig

from ..config import LazyCall as L
from .lr_scheduler import IterationMultiStepParamScheduler, WarmupParamScheduler

__all__ = [
    "with_warmup",
    "multistep_lr_scheduler",
    "cosine_lr_scheduler",
    "linear_lr_scheduler",
    "polynomial_lr_scheduler",
    "constant_lr_scheduler",
]

TRAIN_MAX_ITER = "${train.max_iter}"
# Inside the warmup node: the inner scheduler shares the warmup node's max_iter.
_PARENT_MAX_ITER = "${..max_iter}"


def with_warmup(
    scheduler: DictConfig,
    warmup_steps: int = 0,
    warmup_factor: float = 0.001,
    warmup_method: str = "linear",
    num_updates: int | str = TRAIN_MAX_ITER,
) -> DictConfig:
    """Wrap a LazyCall'd fvcore scheduler in a warmup of ``warmup_steps`` iterations."""
    return L(WarmupParamScheduler)(
        scheduler=scheduler,
        warmup_factor=warmup_factor,
        warmup_iters=warmup_steps,
        max_iter=num_updates,
        warmup_method=warmup_method,
    )


def multistep_lr_scheduler(
    values: Sequence[float] = (1.0, 0.1), milestones: Sequence[int] = (82500,), **warmup: Any
) -> DictConfig:
    """Step schedule: ``values[i]`` from iteration ``milestones[i-1]`` on (absolute iterations).

    ``warmup``: the keyword arguments of :func:`with_warmup` (``warmup_steps``, ``warmup_factor``,
    ``warmup_method``, ``num_updates``), here and in the factories below.
    """
    scheduler = L(IterationMultiStepParamScheduler)(
        values=list(values), milestones=list(milestones), num_updates=_PARENT_MAX_ITER
    )
    return with_warmup(scheduler, **warmup)


def cosine_lr_scheduler(
    start_value: float = 1.0, end_value: float = 0.0001, **warmup: Any
) -> DictConfig:
    """Half-cosine from ``start_value`` to ``end_value`` over the run."""
    return with_warmup(
        L(CosineParamScheduler)(start_value=start_value, end_value=end_value), **warmup
    )


def linear_lr_scheduler(
    start_value: float = 1.0, end_value: float = 0.0001, **warmup: Any
) -> DictConfig:
    """Straight line from ``start_value`` to ``end_value`` over the run."""
    return with_warmup(
        L(LinearParamScheduler)(start_value=start_value, end_value=end_value), **warmup
    )


def polynomial_lr_scheduler(
    power: float = 0.9, base_value: float = 1.0, **warmup: Any
) -> DictConfig:
    """``base_value * (1 - progress) ** power`` (the "poly" schedule of semantic segmentation)."""
    return with_warmup(
        L(PolynomialDecayParamScheduler)(base_value=base_value, power=power), **warmup
    )


def constant_lr_scheduler(value: float = 1.0, **warmup: Any) -> DictConfig:
    """A constant multiplier after the warmup."""
    return with_warmup(L(ConstantParamScheduler)(value=value), **warmup)
