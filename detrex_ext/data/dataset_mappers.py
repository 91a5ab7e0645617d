"""detrex's ``detrex.data.dataset_mappers`` names: the Mask DINO / Mask2Former mappers and their
augmentation builders, with detrex's signatures (``*_transform_gen``).

The mappers are this package's (``detrex_ext.data.mappers``); the builders return the same
augmentation lists as detrex's ``build_transform_gen`` functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import transforms as T
from .mappers import (
    COCOInstanceNewBaselineDatasetMapper,
    COCOPanopticNewBaselineDatasetMapper,
    MaskFormerSemanticDatasetMapper,
    build_lsj_augmentation,
)

__all__ = [
    "COCOInstanceNewBaselineDatasetMapper",
    "COCOPanopticNewBaselineDatasetMapper",
    "MaskFormerSemanticDatasetMapper",
    "coco_instance_transform_gen",
    "coco_panoptic_transform_gen",
    "maskformer_semantic_transform_gen",
]

_FLIPS = ("none", "horizontal", "vertical")


def _training_only(is_train: bool, name: str) -> None:
    if not is_train:
        raise ValueError(f"{name} builds training augmentations only (is_train=False given)")


def coco_instance_transform_gen(
    image_size: int,
    min_scale: float,
    max_scale: float,
    random_flip: str = "horizontal",
    is_train: bool = True,
) -> list[T.Augmentation]:
    """Large-scale jitter: flip (unless ``"none"``), ``ResizeScale(min_scale, max_scale)`` of
    ``image_size`` and ``FixedSizeCrop(image_size)`` padded with 128."""
    _training_only(is_train, "coco_instance_transform_gen")
    if random_flip not in _FLIPS:
        raise ValueError(f"random_flip must be one of {_FLIPS}, got {random_flip!r}")
    return build_lsj_augmentation(image_size, min_scale, max_scale, random_flip)


def coco_panoptic_transform_gen(
    image_size: int,
    min_scale: float,
    max_scale: float,
    random_flip: str = "horizontal",
    is_train: bool = True,
) -> list[T.Augmentation]:
    """The same large-scale jitter as ``coco_instance_transform_gen`` (panoptic recipe)."""
    _training_only(is_train, "coco_panoptic_transform_gen")
    return coco_instance_transform_gen(image_size, min_scale, max_scale, random_flip)


def maskformer_semantic_transform_gen(
    min_size_train: int | Sequence[int],
    max_size_train: int,
    min_size_train_sampling: str,
    enabled_crop: bool,
    crop_params: Mapping[str, Any],
    color_aug_ssd: bool,
    img_format: str,
    is_train: bool = True,
) -> list[T.Augmentation]:
    """Mask2Former's semantic recipe: ``ResizeShortestEdge``, a random crop with a category-area
    limit (``crop_params``: ``crop_type``, ``crop_size``, ``single_category_max_area``,
    optional ``ignored_category``) when ``enabled_crop``, SSD colour jitter when
    ``color_aug_ssd``, and a horizontal flip."""
    _training_only(is_train, "maskformer_semantic_transform_gen")
    augmentations: list[T.Augmentation] = [
        T.ResizeShortestEdge(min_size_train, max_size_train, min_size_train_sampling)
    ]
    if enabled_crop:
        augmentations.append(T.RandomCrop_CategoryAreaConstraint(**crop_params))
    if color_aug_ssd:
        augmentations.append(T.ColorAugSSD(img_format=img_format))
    augmentations.append(T.RandomFlip())
    return augmentations
