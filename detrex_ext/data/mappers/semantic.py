"""Semantic segmentation mapper (Mask2Former / Mask DINO ADE20K and Cityscapes recipe)."""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch

from detrex_ext.structures import Boxes, Instances

from .. import transforms as T
from ..detection_utils import load_sem_seg, mask_bounding_boxes
from .common import image_to_tensor, read_and_augment, resolve_flip

__all__ = ["MaskFormerSemanticDatasetMapper", "build_semantic_augmentation"]

# ADE20K recipe: short side 0.5x..2.0x of 512 in steps of 0.1
ADE20K_MIN_SIZES = tuple(int(x * 0.1 * 512) for x in range(5, 21))


def build_semantic_augmentation(
    min_size_train: Sequence[int] = ADE20K_MIN_SIZES,
    max_size_train: int = 2048,
    min_size_train_sampling: str = "choice",
    crop_size: int | Sequence[int] = 512,
    single_category_max_area: float = 1.0,
    ignore_label: int = 255,
    color_aug_ssd: bool = True,
    image_format: str = "RGB",
    random_flip: str = "horizontal",
) -> list[T.Augmentation]:
    """Resize the short side (choice of ``min_size_train``), random crop with a category-area
    limit, SSD colour jitter, flip: Mask2Former's semantic recipe."""
    if isinstance(crop_size, int):
        crop_size = (crop_size, crop_size)
    augs: list[T.Augmentation] = [
        T.ResizeShortestEdge(list(min_size_train), max_size_train, min_size_train_sampling),
        T.RandomCropWithCategoryAreaLimit(
            "absolute", crop_size, single_category_max_area, ignore_label
        ),
    ]
    if color_aug_ssd:
        augs.append(T.ColorAugSSD(img_format=image_format))
    return augs + resolve_flip(random_flip)


class MaskFormerSemanticDatasetMapper:
    """Dataset dict with a semantic label map -> model input.

    Output: ``image`` (CxHxW uint8) and ``sem_seg`` (long HxW, ``ignore_label`` for unlabelled
    and padded pixels), both padded at the bottom/right to a multiple of
    ``size_divisibility`` (image with 128); when training also ``instances``: one per class
    present, ``gt_masks`` (bool [N, H, W]), ``gt_classes`` and ``gt_boxes`` (mask bounds).

    Args:
        is_train: build training targets.
        augmentations: replaces the recipe built from the arguments below (detrex's name:
            ``augmentation``).
        image_format: "RGB" or "BGR".
        ignore_label: label value of unlabelled pixels (detrex passes ``meta``, the dataset
            metadata, and the label is its ``ignore_label``).
        size_divisibility: pad to a multiple of this (0 = no padding); 512 in the ADE recipe.
        min_size_train, max_size_train, crop_size, single_category_max_area, color_aug_ssd,
            random_flip: see ``build_semantic_augmentation``.
    """

    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: Sequence[T.Augmentation] | None = None,
        image_format: str = "RGB",
        ignore_label: int = 255,
        size_divisibility: int = 512,
        min_size_train: Sequence[int] = ADE20K_MIN_SIZES,
        max_size_train: int = 2048,
        crop_size: int | Sequence[int] = 512,
        single_category_max_area: float = 1.0,
        color_aug_ssd: bool = True,
        random_flip: str = "horizontal",
        augmentation: Sequence[T.Augmentation] | None = None,
        meta: Any = None,
    ):
        if augmentation is not None:
            if augmentations is not None:
                raise ValueError("give augmentations or detrex's augmentation, not both")
            augmentations = augmentation
        if meta is not None:
            ignore_label = getattr(meta, "ignore_label", ignore_label)
        if augmentations is None:
            augmentations = build_semantic_augmentation(
                min_size_train,
                max_size_train,
                "choice",
                crop_size,
                single_category_max_area,
                ignore_label,
                color_aug_ssd,
                image_format,
                random_flip,
            )
        self.is_train = is_train
        self.augmentations = list(augmentations)
        self.image_format = image_format
        self.ignore_label = ignore_label
        self.size_divisibility = size_divisibility

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        sem_seg = load_sem_seg(dataset_dict)
        if sem_seg is None:
            raise ValueError(
                f"{dataset_dict.get('file_name')!r} has no semantic label (sem_seg_file_name); "
                "use a semantic segmentation dataset"
            )
        aug_input, _, _ = read_and_augment(
            dataset_dict, self.augmentations, self.image_format, sem_seg
        )
        for key in (
            "scene",
            "annotations",
            "segments_info",
            "sem_seg_file_name",
            "pan_seg_file_name",
        ):
            dataset_dict.pop(key, None)
        image = aug_input.image
        label = aug_input.sem_seg.astype(np.int64)
        if self.size_divisibility > 0:
            h, w = label.shape
            pad = ((0, (-h) % self.size_divisibility), (0, (-w) % self.size_divisibility))
            image = np.pad(image, pad + ((0, 0),) * (image.ndim - 2), constant_values=128)
            label = np.pad(label, pad, constant_values=self.ignore_label)
        dataset_dict["image"] = image_to_tensor(image)
        dataset_dict["sem_seg"] = torch.from_numpy(label)
        if self.is_train:
            dataset_dict["instances"] = self._targets(label)
        return dataset_dict

    def _targets(self, label: np.ndarray) -> Instances:
        classes = np.unique(label)
        classes = classes[classes != self.ignore_label]
        masks = label[None] == classes[:, None, None]
        target = Instances(label.shape)
        target.gt_classes = torch.from_numpy(classes.astype(np.int64))
        target.gt_masks = torch.from_numpy(masks)
        target.gt_boxes = Boxes(torch.from_numpy(mask_bounding_boxes(masks)))
        return target
