"""Loading official Mask DINO checkpoints: container unwrapping and shared-module aliases.

The official `MaskDINODecoder` registers one box MLP under `1 + 2 * dec_layers` names
(`_bbox_embed`, `bbox_embed.{i}`, `decoder.bbox_embed.{i}`) and one LayerNorm under two
(`decoder_norm`, `decoder.norm`). `state_dict()` writes every alias, but released files may carry
only some of them (detrex writes only `decoder.bbox_embed.{i}`). This module fills every alias from
whichever one is present, so any of those layouts loads with no missing or unexpected keys:

* `decoder_load_pre_hook` is registered on `MaskDINODecoder` and runs inside `load_state_dict`;
* `adapt_checkpoint_state_dict` does the same on a whole state_dict (used by checkpointers and
  `tools/convert_checkpoint.py`), and also unwraps `{"model": ...}` and a `module.` prefix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

__all__ = [
    "alias_groups",
    "fill_aliases",
    "decoder_load_pre_hook",
    "adapt_checkpoint_state_dict",
    "unwrap_checkpoint",
    "describe_layout_mismatch",
]

_PREDICTOR_LAYER = re.compile(r"^(.*)decoder\.layers\.(\d+)\.")
_NON_PERSISTENT = ("pixel_mean", "pixel_std")


def alias_groups(num_layers: int) -> list[list[str]]:
    """Alias module paths (relative to the predictor), preferred source first."""
    box = ["decoder.bbox_embed.0", "_bbox_embed", "bbox_embed.0"]
    box += [f"decoder.bbox_embed.{i}" for i in range(1, num_layers)]
    box += [f"bbox_embed.{i}" for i in range(1, num_layers)]
    return [box, ["decoder_norm", "decoder.norm"]]


def fill_aliases(state_dict: dict, prefix: str, groups: list[list[str]]) -> None:
    """In place: for each alias group, copy the tensors of the first alias present to all others.

    Args:
        state_dict: a flat state_dict.
        prefix: the predictor's key prefix (e.g. "sem_seg_head.predictor.").
        groups: alias module paths relative to `prefix`, preferred source first.
    """
    for group in groups:
        source = next(
            (a for a in group if any(k.startswith(f"{prefix}{a}.") for k in state_dict)), None
        )
        if source is None:
            continue
        head = f"{prefix}{source}."
        params = {k[len(head) :]: v for k, v in state_dict.items() if k.startswith(head)}
        for alias in group:
            for suffix, value in params.items():
                state_dict[f"{prefix}{alias}.{suffix}"] = value


def decoder_load_pre_hook(module, state_dict, prefix, *_args) -> None:
    """`load_state_dict` pre-hook of `MaskDINODecoder`: fill missing aliases."""
    fill_aliases(state_dict, prefix, alias_groups(module.num_layers))


def unwrap_checkpoint(checkpoint: Mapping) -> dict:
    """A bare state_dict from `{"model": sd, ...}` or `sd`, without a DDP `module.` prefix."""
    state_dict = checkpoint.get("model", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state_dict, Mapping):
        raise TypeError("expected a state_dict or a dict with a 'model' state_dict")
    state_dict = dict(state_dict)
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
    return state_dict


def adapt_checkpoint_state_dict(
    checkpoint: Mapping, model_state_dict: Mapping | None = None
) -> dict:
    """Bring an official Mask DINO checkpoint into this model's key layout.

    Args:
        checkpoint: a state_dict or a detectron2-style `{"model": state_dict, ...}`.
        model_state_dict: the target model's state_dict, if available; used to fill the
            constant `criterion.empty_weight` buffer when the checkpoint lacks it.

    Returns:
        a new flat state_dict with every shared-module alias present and non-persistent buffers
        (`pixel_mean`, `pixel_std`) removed.
    """
    state_dict = unwrap_checkpoint(checkpoint)
    for key in _NON_PERSISTENT:
        state_dict.pop(key, None)
    layers: dict[str, int] = {}
    for key in state_dict:
        match = _PREDICTOR_LAYER.match(key)
        if match:
            prefix = match.group(1)
            layers[prefix] = max(layers.get(prefix, 0), int(match.group(2)) + 1)
    for prefix, num_layers in layers.items():
        fill_aliases(state_dict, prefix, alias_groups(num_layers))
    if model_state_dict is not None:
        for key, value in model_state_dict.items():
            if key.endswith("empty_weight") and key not in state_dict:
                state_dict[key] = torch.as_tensor(value).clone()
    return state_dict


_LEVEL_EMBED = "sem_seg_head.pixel_decoder.transformer.level_embed"
_CLASS_EMBED = "sem_seg_head.predictor.class_embed.weight"


def describe_layout_mismatch(checkpoint: Mapping, model_state_dict: Mapping) -> list[str]:
    """Explain the usual config / checkpoint pairing mistakes (feature levels, class count)."""
    messages = []
    ckpt, own = checkpoint.get(_LEVEL_EMBED), model_state_dict.get(_LEVEL_EMBED)
    if ckpt is not None and own is not None and ckpt.shape[0] != own.shape[0]:
        messages.append(
            f"the checkpoint was trained with {ckpt.shape[0]} feature levels but the model has "
            f"{own.shape[0]} (sem_seg_head.pixel_decoder.total_num_feature_levels): the "
            "deformable attention weights will not load; use the config released with this "
            "checkpoint (e.g. *_hid1024 for 3 levels, the R50 reference config for 4, Swin-L for 5)"
        )
    ckpt, own = checkpoint.get(_CLASS_EMBED), model_state_dict.get(_CLASS_EMBED)
    if ckpt is not None and own is not None and ckpt.shape[0] != own.shape[0]:
        messages.append(
            f"the checkpoint's class head has {ckpt.shape[0]} outputs but the model's has "
            f"{own.shape[0]} (model.num_classes, +1 with the semantic CE loss): the class head "
            "and label embedding are not loaded (expected when fine-tuning on new classes)"
        )
    return messages
