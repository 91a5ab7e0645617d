"""Optimizer parameter groups with per-parameter learning rates and weight decay.

``get_default_optimizer_params`` follows detectron2's ``solver/build.py`` semantics (one group per
parameter, then identical groups merged) and adds the rules Mask2Former/Mask DINO train with:
``weight_decay_embed`` for ``nn.Embedding`` weights and zero weight decay for parameters whose
name contains one of ``zero_weight_decay_names`` (Swin's ``relative_position_bias_table`` and
``absolute_pos_embed``).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

__all__ = ["get_default_optimizer_params", "reduce_param_groups", "NORM_MODULE_TYPES"]

NORM_MODULE_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def get_default_optimizer_params(
    model: nn.Module,
    base_lr: float | None = None,
    weight_decay: float | None = None,
    weight_decay_norm: float | None = None,
    bias_lr_factor: float | None = 1.0,
    weight_decay_bias: float | None = None,
    lr_factor_func: Callable[[str], float] | None = None,
    overrides: dict[str, dict[str, float]] | None = None,
    weight_decay_embed: float | None = None,
    zero_weight_decay_names: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Parameter groups for a torch optimizer.

    Rules, applied in this order to every trainable parameter (shared parameters count once):

    1. ``lr = base_lr`` and ``weight_decay = weight_decay`` (each only when not None).
    2. A name containing one of ``zero_weight_decay_names`` gets ``weight_decay = 0``.
    3. Parameters of normalisation layers (``NORM_MODULE_TYPES`` and their subclasses) get
       ``weight_decay_norm``;
       parameters of ``nn.Embedding`` get ``weight_decay_embed`` (each only when not None).
    4. ``lr *= lr_factor_func(name)`` with the full parameter name (``"backbone.res2.0.conv1.weight"``).
    5. ``overrides[param_name]`` (by the parameter's own name, e.g. ``"bias"``, ``"pos_embed"``)
       replaces any of lr / weight_decay; ``bias_lr_factor`` and ``weight_decay_bias`` are
       shorthands for an override of ``"bias"``.

    Groups with identical hyper-parameters are merged, keeping parameter order.

    Args:
        model: the module whose parameters are optimised.
        base_lr: base learning rate; required by ``bias_lr_factor != 1`` and ``lr_factor_func``.
        weight_decay: default weight decay.
        weight_decay_norm: weight decay of normalisation-layer parameters.
        bias_lr_factor: lr multiplier of biases.
        weight_decay_bias: weight decay of biases.
        lr_factor_func: ``name -> factor``, e.g. ``ModuleNameLrFactor({"backbone": 0.1})``.
        overrides: ``{param_name: {"lr": ..., "weight_decay": ...}}``.
        weight_decay_embed: weight decay of ``nn.Embedding`` weights (query embeddings).
        zero_weight_decay_names: substrings of parameter names that get no weight decay.

    Returns:
        A list of ``{"params": [tensors], "lr": ..., "weight_decay": ...}`` dicts.
    """
    overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    defaults: dict[str, float] = {}
    if base_lr is not None:
        defaults["lr"] = base_lr
    if weight_decay is not None:
        defaults["weight_decay"] = weight_decay
    bias_overrides: dict[str, float] = {}
    if bias_lr_factor is not None and bias_lr_factor != 1.0:
        if base_lr is None:
            raise ValueError("bias_lr_factor requires base_lr (the bias lr is base_lr * factor)")
        bias_overrides["lr"] = base_lr * bias_lr_factor
    if weight_decay_bias is not None:
        bias_overrides["weight_decay"] = weight_decay_bias
    if bias_overrides:
        if "bias" in overrides:
            raise ValueError(
                "conflicting settings for biases: overrides['bias'] and bias_lr_factor/"
                "weight_decay_bias; use one of them"
            )
        overrides["bias"] = bias_overrides
    if lr_factor_func is not None and base_lr is None:
        raise ValueError(
            "lr_factor_func requires base_lr (the lr of a parameter is base_lr * factor)"
        )

    groups: list[dict[str, Any]] = []
    seen: set[torch.Tensor] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or param in seen:
                continue
            seen.add(param)
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            hyper = dict(defaults)
            if any(pattern in full_name for pattern in zero_weight_decay_names):
                hyper["weight_decay"] = 0.0
            if weight_decay_norm is not None and isinstance(module, NORM_MODULE_TYPES):
                hyper["weight_decay"] = weight_decay_norm
            if weight_decay_embed is not None and isinstance(module, nn.Embedding):
                hyper["weight_decay"] = weight_decay_embed
            if lr_factor_func is not None:
                hyper["lr"] *= lr_factor_func(full_name)
            hyper.update(overrides.get(param_name, {}))
            groups.append({"params": [param], **hyper})
    return reduce_param_groups(groups)


def reduce_param_groups(groups: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge parameter groups whose hyper-parameters are equal (first-seen order is kept)."""
    merged: dict[tuple, dict[str, Any]] = {}
    for group in groups:
        hyper = {k: v for k, v in group.items() if k != "params"}
        key = tuple(sorted(hyper.items()))
        if key not in merged:
            merged[key] = {**hyper, "params": []}
        merged[key]["params"].extend(group["params"])
    return list(merged.values())
