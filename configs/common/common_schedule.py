"""Generic learning-rate schedule factories (detrex's ``common_schedule.py`` names).

Config files in this tree can import them relatively (``from .common_schedule import
cosine_lr_scheduler``); configs elsewhere import them absolutely from
``detrex_ext.solver.lr_schedule_configs``. All take ``warmup_steps`` and ``num_updates`` in
iterations (``num_updates`` defaults to ``"${train.max_iter}"``).
"""

from detrex_ext.solver.lr_schedule_configs import (
    constant_lr_scheduler,
    cosine_lr_scheduler,
    linear_lr_scheduler,
    multistep_lr_scheduler,
    polynomial_lr_scheduler,
    with_warmup,
)
