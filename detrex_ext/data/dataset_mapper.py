"""``DatasetMapper``: detectron2's general mapper, also the test-time mapper of every recipe."""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch

from . import transforms as T
from .detection_utils import (
    annotations_to_instances,
    filter_empty_instances,
    load_sem_seg,
    transform_instance_annotations,
)
from .mappers.common import image_to_tensor, read_and_augment

__all__ = ["DatasetMapper", "build_test_augmentation"]


def build_test_augmentation(min_size: int = 800, max_size: int = 1333) -> list[T.Augmentation]:
    """Test-time resize: short side ``min_size``, long side at most ``max_size`` (COCO 800/1333;
    ADE20K 512/2048; Cityscapes 1024/2048)."""
    return [T.ResizeShortestEdge(min_size, max_size, "choice")]


class DatasetMapper:
    """Read the image, augment it, and (in training) transform the annotations.

    Output: ``image`` (CxHxW uint8 in ``image_format``), ``height``/``width`` (the original
    size, which the model's outputs are resized to), ``sem_seg`` (long HxW) when the record
    has a semantic label, and in training ``instances`` (``gt_boxes``, ``gt_classes``,
    ``gt_masks`` as PolygonMasks or BitMasks). At test time the annotations are dropped.

    Args:
        is_train: training or inference.
        augmentations: the augmentations; default: test resize 800/1333 at inference,
            multi-scale 640..800 + flip in training.
        image_format: "RGB" (Mask DINO) or "BGR".
        use_instance_mask: keep the masks of the annotations.
        instance_mask_format: "polygon" or "bitmask".
        recompute_boxes: replace boxes by the bounds of the transformed masks (use with crops).
    """

    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: Sequence[T.Augmentation | T.Transform] | None = None,
        image_format: str = "RGB",
        use_instance_mask: bool = True,
        instance_mask_format: str = "polygon",
        recompute_boxes: bool = False,
    ):
        if augmentations is None:
            if is_train:
                augmentations = [
                    T.ResizeShortestEdge((640, 672, 704, 736, 768, 800), 1333, "choice"),
                    T.RandomFlip(),
                ]
            else:
                augmentations = build_test_augmentation()
        if recompute_boxes and not use_instance_mask:
            raise ValueError("recompute_boxes=True needs use_instance_mask=True")
        self.is_train = is_train
        self.augmentations = list(augmentations)
        self.image_format = image_format
        self.use_instance_mask = use_instance_mask
        self.instance_mask_format = instance_mask_format
        self.recompute_boxes = recompute_boxes

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        sem_seg = load_sem_seg(dataset_dict)
        aug_input, transforms, _ = read_and_augment(
            dataset_dict, self.augmentations, self.image_format, sem_seg
        )
        image_shape = aug_input.image.shape[:2]
        dataset_dict["image"] = image_to_tensor(aug_input.image)
        dataset_dict.pop("scene", None)
        if aug_input.sem_seg is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(aug_input.sem_seg.astype(np.int64))
        if not self.is_train:
            for key in ("annotations", "sem_seg_file_name", "segments_info", "pan_seg_file_name"):
                dataset_dict.pop(key, None)
            return dataset_dict
        if "annotations" in dataset_dict:
            annotations = [
                transform_instance_annotations(obj, transforms, image_shape)
                for obj in dataset_dict.pop("annotations")
                if obj.get("iscrowd", 0) == 0
            ]
            if not self.use_instance_mask:
                for obj in annotations:
                    obj.pop("segmentation", None)
            instances = annotations_to_instances(
                annotations, image_shape, self.instance_mask_format
            )
            if self.recompute_boxes and instances.has("gt_masks"):
                instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
            dataset_dict["instances"] = filter_empty_instances(instances)
        return dataset_dict

    def __repr__(self) -> str:
        augs = ", ".join(map(repr, self.augmentations))
        return f"DatasetMapper(is_train={self.is_train}, augmentations=[{augs}])"
