"""Rename torchvision / timm ResNet state dicts to detectron2 names (and back).

torchvision and timm name a ResNet ``conv1, bn1, layer1..layer4, fc`` with ``bnK`` next to
``convK`` and ``downsample.0/1`` for the projection shortcut; detectron2 (and therefore Mask DINO
checkpoints) uses ``stem.conv1(.norm)``, ``res2..res5``, ``convK.norm`` and ``shortcut(.norm)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

__all__ = ["convert_d2_resnet_to_torchvision", "convert_torchvision_resnet_state_dict"]

_NORM = r"(weight|bias|running_mean|running_var)"
_D2_BLOCK_PARAM = re.compile(rf"(conv\d|shortcut)\.(weight|norm\.{_NORM})")
_DROPPED = re.compile(r"fc\.(weight|bias)|.*num_batches_tracked")


def _torchvision_to_d2(key: str) -> str | None:
    if key == "conv1.weight":
        return "stem.conv1.weight"
    match = re.fullmatch(rf"bn1\.{_NORM}", key)
    if match:
        return f"stem.conv1.norm.{match[1]}"
    match = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", key)
    if not match:
        return None
    rest = re.sub(r"^bn(\d)\.", r"conv\1.norm.", match[3])
    rest = re.sub(r"^downsample\.0\.", "shortcut.", rest)
    rest = re.sub(r"^downsample\.1\.", "shortcut.norm.", rest)
    if not _D2_BLOCK_PARAM.fullmatch(rest):
        return None
    return f"res{int(match[1]) + 1}.{match[2]}.{rest}"


def _d2_to_torchvision(key: str) -> str | None:
    if key == "stem.conv1.weight":
        return "conv1.weight"
    match = re.fullmatch(rf"stem\.conv1\.norm\.{_NORM}", key)
    if match:
        return f"bn1.{match[1]}"
    match = re.fullmatch(r"res(\d)\.(\d+)\.(.+)", key)
    if not match or not _D2_BLOCK_PARAM.fullmatch(match[3]):
        return None
    rest = re.sub(r"^conv(\d)\.norm\.", r"bn\1.", match[3])
    rest = re.sub(r"^shortcut\.norm\.", "downsample.1.", rest)
    rest = re.sub(r"^shortcut\.", "downsample.0.", rest)
    return f"layer{int(match[1]) - 1}.{match[2]}.{rest}"


def convert_torchvision_resnet_state_dict(
    state_dict: Mapping[str, torch.Tensor], prefix: str = ""
) -> dict[str, torch.Tensor]:
    """Rename a torchvision / timm ResNet state dict to detectron2 keys.

    ``fc.*`` and ``num_batches_tracked`` entries are dropped; tensors are shared, not copied.

    Args:
        state_dict: e.g. ``torchvision.models.resnet50().state_dict()``.
        prefix: prepended to every output key (e.g. ``"backbone."``).

    Returns:
        ``{"stem.conv1.weight": ..., "res2.0.conv1.norm.weight": ..., ...}``.

    Raises:
        KeyError: for a key that is not part of a torchvision / timm ResNet.
    """
    converted = {}
    for key, value in state_dict.items():
        if _DROPPED.fullmatch(key):
            continue
        new_key = _torchvision_to_d2(key)
        if new_key is None:
            raise KeyError(
                f"{key!r} is not a torchvision/timm ResNet key (expected conv1, bn1, layerN.*, fc)"
            )
        converted[prefix + new_key] = value
    return converted


def convert_d2_resnet_to_torchvision(
    state_dict: Mapping[str, torch.Tensor], prefix: str = ""
) -> dict[str, torch.Tensor]:
    """The inverse of ``convert_torchvision_resnet_state_dict`` (without ``fc``).

    Args:
        state_dict: detectron2-named ResNet weights; keys must start with ``prefix``.
        prefix: stripped from every key (e.g. ``"backbone."``).

    Returns:
        torchvision-named weights, loadable with ``strict=False`` (``fc`` and
        ``num_batches_tracked`` are missing).
    """
    converted = {}
    for key, value in state_dict.items():
        new_key = _d2_to_torchvision(key[len(prefix) :]) if key.startswith(prefix) else None
        if new_key is None:
            raise KeyError(
                f"{key!r} is not a detectron2 ResNet key ({prefix}stem.*, {prefix}res2..res5.*)"
            )
        converted[new_key] = value
    return converted
