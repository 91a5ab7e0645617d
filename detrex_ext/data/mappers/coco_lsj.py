"""COCO instance and panoptic mappers with large-scale jitter (Mask DINO's COCO recipes).

Both apply: random flip, ``ResizeScale(min_scale, max_scale)`` of ``image_size``, and
``FixedSizeCrop(image_size)`` padded with 128 to a square. Targets are dense bool masks
``[N, image_size, image_size]`` with boxes from the masks.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch

from detrex_ext.structures import Boxes, Instances, PolygonMasks, masks_to_tensor

from .. import transforms as T
from ..detection_utils import (
    annotations_to_instances,
    filter_empty_instances,
    load_pan_seg,
    mask_bounding_boxes,
    transform_instance_annotations,
)
from .common import image_to_tensor, read_and_augment, resolve_flip

__all__ = [
    "COCOInstanceLSJDatasetMapper",
    "COCOInstanceNewBaselineDatasetMapper",
    "COCOPanopticLSJDatasetMapper",
    "COCOPanopticNewBaselineDatasetMapper",
    "build_lsj_augmentation",
]


def build_lsj_augmentation(
    image_size: int = 1024,
    min_scale: float = 0.1,
    max_scale: float = 2.0,
    random_flip: str = "horizontal",
    pad_value: float = 128.0,
) -> list[T.Augmentation]:
    """Flip, ``ResizeScale(min_scale, max_scale, image_size, image_size)`` and
    ``FixedSizeCrop(image_size)`` with padding (Mask DINO's ``build_transform_gen``)."""
    return [
        *resolve_flip(random_flip),
        T.ResizeScale(min_scale, max_scale, image_size, image_size),
        T.FixedSizeCrop((image_size, image_size), pad=True, pad_value=pad_value),
    ]


class _LSJMapperBase:
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentation: Sequence[T.Augmentation] | None = None,
        image_format: str = "RGB",
        image_size: int = 1024,
        min_scale: float = 0.1,
        max_scale: float = 2.0,
        random_flip: str = "horizontal",
        pad_value: float = 128.0,
    ):
        if augmentation is None:
            augmentation = build_lsj_augmentation(
                image_size, min_scale, max_scale, random_flip, pad_value
            )
        self.is_train = is_train
        self.augmentation = list(augmentation)
        self.image_format = image_format

    def _start(self, dataset_dict: dict) -> tuple[dict, T.TransformList, tuple[int, int]]:
        # A copy of the top level only: the mappers replace its entries but never change the
        # objects in them (the instance mapper deep-copies the annotations it transforms), so
        # the record's scene, polygons and segments are not copied for every sample.
        dataset_dict = dict(dataset_dict)
        aug_input, transforms, padding_mask = read_and_augment(
            dataset_dict, self.augmentation, self.image_format
        )
        dataset_dict["image"] = image_to_tensor(aug_input.image)
        dataset_dict["padding_mask"] = padding_mask
        return dataset_dict, transforms, aug_input.image.shape[:2]

    def __repr__(self) -> str:
        augs = ", ".join(map(repr, self.augmentation))
        return f"{type(self).__name__}(is_train={self.is_train}, augmentation=[{augs}])"


class COCOInstanceLSJDatasetMapper(_LSJMapperBase):
    """Dataset dict with instance annotations -> model input for LSJ training.

    Output: ``image`` (CxHxW uint8), ``padding_mask`` (HxW bool, True = padding), and when
    training ``instances`` with ``gt_classes`` (int64 [N]), ``gt_masks`` (bool [N, H, W]) and
    ``gt_boxes`` (tight polygon bounds). Crowd annotations are dropped, and so are instances
    that the crop removes; an image without annotations gives 0 instances.

    Args:
        is_train: produce training targets (otherwise only the image).
        augmentation: replaces the LSJ recipe built from the arguments below.
        image_format: "RGB" (Mask DINO) or "BGR".
        image_size, min_scale, max_scale, random_flip, pad_value: see ``build_lsj_augmentation``.
    """

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict, transforms, image_shape = self._start(dataset_dict)
        dataset_dict.pop("scene", None)
        annotations = dataset_dict.pop("annotations", [])
        dataset_dict.pop("segments_info", None)
        if not self.is_train:
            return dataset_dict
        annotations = copy.deepcopy(annotations)  # transformed in place below
        annotations = [
            transform_instance_annotations(obj, transforms, image_shape)
            for obj in annotations
            if obj.get("iscrowd", 0) == 0
        ]
        polygon_only = all(isinstance(a.get("segmentation"), list) for a in annotations)
        instances = annotations_to_instances(
            annotations, image_shape, "polygon" if polygon_only else "bitmask"
        )
        if not instances.has("gt_masks"):
            instances.gt_masks = PolygonMasks([[] for _ in annotations])
        instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        instances = filter_empty_instances(instances)
        h, w = image_shape
        dense = masks_to_tensor(instances.gt_masks, h, w)
        target = Instances(image_shape)
        target.gt_classes = instances.gt_classes
        target.gt_boxes = instances.gt_boxes
        target.gt_masks = dense
        dataset_dict["instances"] = target
        return dataset_dict


class COCOPanopticLSJDatasetMapper(_LSJMapperBase):
    """Dataset dict with a panoptic map -> model input for LSJ panoptic training.

    The panoptic id map goes through the same transforms (nearest); padded pixels become void.
    Every non-crowd segment gives one target: ``gt_masks`` (bool [N, H, W], possibly empty after
    the crop, as in Mask DINO), ``gt_classes`` (contiguous ids), ``gt_boxes`` (mask bounds with
    exclusive max; (0, 0, 0, 0) for empty masks).
    """

    def __call__(self, dataset_dict: dict) -> dict:
        pan_seg = load_pan_seg(dataset_dict) if self.is_train else None
        dataset_dict, transforms, image_shape = self._start(dataset_dict)
        dataset_dict.pop("scene", None)
        dataset_dict.pop("annotations", None)
        segments_info = dataset_dict.pop("segments_info", [])
        if not self.is_train:
            return dataset_dict
        if pan_seg is None:
            raise ValueError(
                f"{dataset_dict.get('file_name')!r} has no panoptic label (pan_seg_file_name); "
                "use a panoptic dataset such as coco_2017_train_panoptic"
            )
        # int32 ids take PIL's exact nearest-neighbour path (COCO ids are < 256^3)
        pan_seg = transforms.apply_segmentation(pan_seg.astype(np.int32))
        pan_seg[dataset_dict["padding_mask"].numpy()] = 0
        segments = [s for s in segments_info if not s.get("iscrowd", 0)]
        ids = np.asarray([s["id"] for s in segments], dtype=np.int32)
        masks = pan_seg[None] == ids[:, None, None]
        target = Instances(image_shape)
        target.gt_classes = torch.tensor([s["category_id"] for s in segments], dtype=torch.int64)
        target.gt_masks = torch.from_numpy(masks)
        target.gt_boxes = Boxes(torch.from_numpy(mask_bounding_boxes(masks)))
        dataset_dict["instances"] = target
        return dataset_dict


# the names used by Mask DINO / Mask2Former / detrex configs
COCOInstanceNewBaselineDatasetMapper = COCOInstanceLSJDatasetMapper
COCOPanopticNewBaselineDatasetMapper = COCOPanopticLSJDatasetMapper
