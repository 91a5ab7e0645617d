"""Reading images and labels, and turning transformed annotations into ``Instances``.

Dataset dicts point at files (``file_name``, ``sem_seg_file_name``, ``pan_seg_file_name``) or,
for generated data, carry a ``scene``: a picklable object with ``image()`` (HxWx3 uint8 RGB),
``sem_seg()`` (HxW uint8, 255 = ignore) and ``pan_seg()`` (HxW int64 segment ids, 0 = void).
``load_image`` / ``load_sem_seg`` / ``load_pan_seg`` hide the difference from mappers and
evaluators.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch
from fvcore.transforms.transform import Transform, TransformList

from detrex_ext.structures import (
    BitMasks,
    Boxes,
    BoxMode,
    Instances,
    PolygonMasks,
    polygons_to_bitmask,
)
from detrex_ext.utils.image_io import (
    convert_image_format,
    id2rgb,
    load_image,
    load_pan_seg,
    load_sem_seg,
    read_image,
    rgb2id,
)

from .transforms.transform import CropTransform

__all__ = [
    "annotations_to_instances",
    "check_image_size",
    "convert_image_format",
    "filter_empty_instances",
    "gen_crop_transform_with_instance",
    "id2rgb",
    "load_image",
    "load_pan_seg",
    "load_sem_seg",
    "mask_bounding_boxes",
    "polygons_to_dense_masks",
    "read_image",
    "rgb2id",
    "transform_instance_annotations",
]


def check_image_size(dataset_dict: dict, image: np.ndarray) -> None:
    """Check the image against the dict's ``height``/``width`` (set them when absent)."""
    h, w = image.shape[:2]
    expected = (dataset_dict.get("height"), dataset_dict.get("width"))
    if expected[0] is not None and expected[1] is not None and expected != (h, w):
        raise ValueError(
            f"image {dataset_dict.get('file_name', '')!r} is {w}x{h} (WxH) but its dataset dict "
            f"says {expected[1]}x{expected[0]}; if the file has an EXIF rotation, the annotations "
            "were made for the unrotated image: fix the dataset's width/height or the file"
        )
    dataset_dict.setdefault("height", h)
    dataset_dict.setdefault("width", w)


def transform_instance_annotations(
    annotation: dict[str, Any],
    transforms: Transform | Sequence[Transform],
    image_size: tuple[int, int],
) -> dict[str, Any]:
    """Apply ``transforms`` to one annotation's box and segmentation (in place; also returned).

    The box becomes XYXY_ABS clipped to ``image_size = (h, w)``. Polygons are transformed
    (and clipped by crops; pieces cut away disappear); RLE masks become HxW uint8 arrays.
    """
    if isinstance(transforms, (list, tuple)):
        transforms = TransformList(list(transforms))
    h, w = image_size
    box = BoxMode.convert(list(annotation["bbox"]), annotation["bbox_mode"], BoxMode.XYXY_ABS)
    box = transforms.apply_box(np.array([box], dtype=np.float64))[0].clip(min=0)
    annotation["bbox"] = np.minimum(box, [w, h, w, h])
    annotation["bbox_mode"] = BoxMode.XYXY_ABS
    segm = annotation.get("segmentation")
    if isinstance(segm, list):
        polygons = [np.asarray(p, dtype=np.float64).reshape(-1, 2).copy() for p in segm]
        annotation["segmentation"] = [p.reshape(-1) for p in transforms.apply_polygons(polygons)]
    elif isinstance(segm, dict):
        mask = transforms.apply_segmentation(_decode_rle(segm))
        if mask.shape[:2] != (h, w):
            raise ValueError(f"transformed mask has size {mask.shape[:2]}, expected {(h, w)}")
        annotation["segmentation"] = mask
    elif isinstance(segm, np.ndarray):
        annotation["segmentation"] = transforms.apply_segmentation(segm)
    elif segm is not None:
        raise TypeError(f"cannot transform a segmentation of type {type(segm)}")
    return annotation


def _decode_rle(segm: dict) -> np.ndarray:
    if isinstance(segm.get("counts"), list):  # uncompressed RLE
        segm = mask_util.frPyObjects(segm, *segm["size"])
    return mask_util.decode([segm])[:, :, 0]


def annotations_to_instances(
    annotations: list[dict[str, Any]],
    image_size: tuple[int, int],
    mask_format: str = "polygon",
) -> Instances:
    """Build training targets from transformed annotations.

    Returns:
        ``Instances`` with ``gt_boxes`` (Boxes XYXY_ABS), ``gt_classes`` (int64 [N]) and, when the
        annotations have segmentations, ``gt_masks`` (``PolygonMasks`` for
        ``mask_format="polygon"``, ``BitMasks`` [N, H, W] for ``"bitmask"``).
    """
    if mask_format not in ("polygon", "bitmask"):
        raise ValueError(f"mask_format must be 'polygon' or 'bitmask', got {mask_format!r}")
    boxes = [
        BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations
    ]
    target = Instances(image_size)
    target.gt_boxes = Boxes(torch.tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)))
    target.gt_classes = torch.tensor(
        [int(a["category_id"]) for a in annotations], dtype=torch.int64
    )
    if annotations and "segmentation" in annotations[0]:
        segms = [a["segmentation"] for a in annotations]
        if mask_format == "polygon":
            if not all(isinstance(s, list) for s in segms):
                raise ValueError(
                    "mask_format='polygon' needs polygon segmentations, but some are RLE or "
                    "arrays (crowd annotations?); drop them or use mask_format='bitmask'"
                )
            target.gt_masks = PolygonMasks(segms)
        else:
            h, w = image_size
            masks = [_segmentation_to_mask(s, h, w) for s in segms]
            target.gt_masks = BitMasks(torch.from_numpy(np.stack(masks)))
    return target


def _segmentation_to_mask(segm: Any, height: int, width: int) -> np.ndarray:
    if isinstance(segm, list):
        return polygons_to_bitmask(segm, height, width)
    if isinstance(segm, dict):
        return _decode_rle(segm).astype(bool)
    mask = np.asarray(segm).astype(bool)
    if mask.shape != (height, width):
        raise ValueError(
            f"mask of size {mask.shape} does not match the image size {(height, width)}"
        )
    return mask


def filter_empty_instances(
    instances: Instances,
    by_box: bool = True,
    by_mask: bool = True,
    box_threshold: float = 1e-5,
    return_mask: bool = False,
) -> Instances | tuple[Instances, torch.Tensor]:
    """Drop instances whose box has a side <= ``box_threshold`` or whose mask is empty."""
    keep = torch.ones(len(instances), dtype=torch.bool) if instances.get_fields() else None
    if keep is None:
        return (instances, torch.zeros(0, dtype=torch.bool)) if return_mask else instances
    if by_box and instances.has("gt_boxes"):
        keep &= instances.gt_boxes.nonempty(threshold=box_threshold)
    if by_mask and instances.has("gt_masks"):
        masks = instances.gt_masks
        keep &= masks.nonempty() if hasattr(masks, "nonempty") else masks.flatten(1).any(dim=1)
    filtered = instances[keep]
    return (filtered, keep) if return_mask else filtered


def mask_bounding_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight boxes ``[N, 4]`` (x0, y0, x1 + 1, y1 + 1) of bool masks ``[N, H, W]``, as
    ``BitMasks.get_bounding_boxes`` (empty masks give zeros), computed with numpy."""
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    if len(masks) == 0:
        return boxes
    cols, rows = masks.any(axis=1), masks.any(axis=2)
    nonempty = cols.any(axis=1)
    boxes[:, 0] = cols.argmax(axis=1)
    boxes[:, 1] = rows.argmax(axis=1)
    boxes[:, 2] = cols.shape[1] - cols[:, ::-1].argmax(axis=1)
    boxes[:, 3] = rows.shape[1] - rows[:, ::-1].argmax(axis=1)
    boxes[~nonempty] = 0
    return boxes


def polygons_to_dense_masks(
    polygons: Sequence[Sequence[np.ndarray]], height: int, width: int
) -> torch.Tensor:
    """Rasterise per-instance polygon lists into a bool tensor ``[N, height, width]``."""
    if len(polygons) == 0:
        return torch.zeros(0, height, width, dtype=torch.bool)
    return torch.from_numpy(np.stack([polygons_to_bitmask(p, height, width) for p in polygons]))


def gen_crop_transform_with_instance(
    crop_size: Sequence[int], image_size: Sequence[int], instance: dict
) -> CropTransform:
    """A random ``crop_size`` crop of an ``image_size`` image that contains the centre of the
    annotation ``instance`` (its ``bbox`` / ``bbox_mode``).

    The crop's top-left corner is uniform over the integer positions that keep it inside the
    image and keep the box centre ``(cy, cx)`` inside it: ``y0`` in
    ``[max(floor(cy) - h, 0), min(H - h, ceil(cy))]`` and likewise for ``x0``.

    Args:
        crop_size: ``(h, w)`` in pixels.
        image_size: ``(H, W)``.
        instance: one annotation dict in detectron2's dataset format.
    """
    crop_size = np.asarray(crop_size, dtype=np.int32)
    x0, y0, x1, y1 = BoxMode.convert(
        list(instance["bbox"]), instance["bbox_mode"], BoxMode.XYXY_ABS
    )
    center_yx = np.asarray([(y0 + y1) * 0.5, (x0 + x1) * 0.5])
    if image_size[0] < center_yx[0] or image_size[1] < center_yx[1]:
        raise ValueError(
            f"the annotation box {instance['bbox']} has its centre outside the image {image_size}"
        )
    if image_size[0] < crop_size[0] or image_size[1] < crop_size[1]:
        raise ValueError(f"crop size {tuple(crop_size)} is larger than the image {image_size}")
    min_yx = np.maximum(np.floor(center_yx).astype(np.int32) - crop_size, 0)
    max_yx = np.maximum(np.asarray(image_size, dtype=np.int32) - crop_size, 0)
    max_yx = np.minimum(max_yx, np.ceil(center_yx).astype(np.int32))
    top = int(np.random.randint(min_yx[0], max_yx[0] + 1))
    left = int(np.random.randint(min_yx[1], max_yx[1] + 1))
    return CropTransform(left, top, int(crop_size[1]), int(crop_size[0]))
