"""Pieces shared by the mappers: reading + augmenting an image, and tensor conversion."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from fvcore.transforms.transform import TransformList

from .. import transforms as T
from ..detection_utils import check_image_size, load_image

__all__ = ["image_to_tensor", "read_and_augment", "resolve_flip"]


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWxC (or HxW) numpy image -> CxHxW tensor of the same dtype."""
    if image.ndim == 2:
        image = image[:, :, None]
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


def read_and_augment(
    dataset_dict: dict,
    augmentations: Sequence[T.Augmentation | T.Transform],
    image_format: str,
    sem_seg: np.ndarray | None = None,
) -> tuple[T.AugInput, TransformList, torch.Tensor]:
    """Load the record's image, check its size and apply ``augmentations``.

    Returns:
        ``(aug_input, transforms, padding_mask)``: the augmented image (and ``sem_seg`` when
        given), the transforms to apply to the annotations, and a bool ``[H, W]`` tensor that is
        True on pixels added by padding.
    """
    image = load_image(dataset_dict, image_format)
    check_image_size(dataset_dict, image)
    aug_input = T.AugInput(image, sem_seg=sem_seg)
    transforms = T.AugmentationList(augmentations)(aug_input)
    valid = transforms.apply_segmentation(np.ones(image.shape[:2], dtype=np.uint8))
    padding_mask = torch.from_numpy(np.ascontiguousarray(valid != 1))
    return aug_input, transforms, padding_mask


def resolve_flip(random_flip: str | bool | None) -> list[T.Augmentation]:
    """``"horizontal"`` / ``"vertical"`` / ``"none"`` (or True / False) -> flip augmentations."""
    if random_flip in (None, False, "none"):
        return []
    if random_flip in (True, "horizontal"):
        return [T.RandomFlip(horizontal=True, vertical=False)]
    if random_flip == "vertical":
        return [T.RandomFlip(horizontal=False, vertical=True)]
    raise ValueError(f"random_flip must be 'horizontal', 'vertical' or 'none', got {random_flip!r}")
