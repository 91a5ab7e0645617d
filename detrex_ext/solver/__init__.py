"""Optimizer parameter groups and learning-rate schedules (detectron2/detrex names).

fvcore's ``ParamScheduler`` classes are used as they are; this package adds the warmup wrapper,
the torch scheduler that applies a multiplier, and config-friendly lr factors.
"""

from .build import NORM_MODULE_TYPES, get_default_optimizer_params, reduce_param_groups
from .lr_factors import ModuleNameLrFactor
from .lr_scheduler import IterationMultiStepParamScheduler, LRMultiplier, WarmupParamScheduler

__all__ = [
    "get_default_optimizer_params",
    "reduce_param_groups",
    "NORM_MODULE_TYPES",
    "ModuleNameLrFactor",
    "WarmupParamScheduler",
    "IterationMultiStepParamScheduler",
    "LRMultiplier",
]
