"""Optimizers over parameter groups (``detrex_ext.solver.get_default_optimizer_params``).

``optimizer.params.model`` is not in the config (as in detectron2/detrex): the launcher sets it
(``cfg.optimizer.params.model = model``) before the optimizer is built, so the config saves and
loads with any LazyConfig implementation. Parameter-group rules:

- ``weight_decay_norm``: weight decay of normalisation layers (0.0 here, as in detrex);
- ``weight_decay_embed``: weight decay of ``nn.Embedding`` weights (None = the default);
- ``zero_weight_decay_names``: parameter-name substrings without weight decay (Swin uses
  ``["relative_position_bias_table", "absolute_pos_embed"]``);
- ``lr_factor_func``: e.g. ``L(ModuleNameLrFactor)(patterns={"backbone": 0.1})``.
"""

import torch

from detrex_ext.config import LazyCall as L
from detrex_ext.solver import get_default_optimizer_params

SGD = L(torch.optim.SGD)(
    params=L(get_default_optimizer_params)(
        weight_decay_norm=0.0,
        weight_decay_embed=None,
        zero_weight_decay_names=[],
        lr_factor_func=None,
    ),
    lr=0.02,
    momentum=0.9,
    weight_decay=1e-4,
)

AdamW = L(torch.optim.AdamW)(
    params=L(get_default_optimizer_params)(
        # base_lr is needed for lr_factor_func; it follows optimizer.lr.
        base_lr="${..lr}",
        weight_decay_norm=0.0,
        weight_decay_embed=None,
        zero_weight_decay_names=[],
        lr_factor_func=None,
    ),
    lr=1e-4,
    betas=(0.9, 0.999),
    weight_decay=0.1,
    # True: one fused kernel updates every parameter (CUDA or CPU; fewer launches than the
    # default multi-tensor path, results equal up to rounding). None: PyTorch's default.
    fused=None,
)
