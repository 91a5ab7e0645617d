"""Box utilities: format conversion, IoU / GIoU, masks to boxes, and ``inverse_sigmoid``.

Boxes are ``[N, 4]`` tensors in ``(x1, y1, x2, y2)`` ("xyxy") or ``(cx, cy, w, h)`` ("cxcywh")
format, in any consistent unit (DETR models use coordinates normalised to [0, 1]). The pairwise
functions wrap ``torchvision.ops``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import ops

__all__ = [
    "box_cxcywh_to_xyxy",
    "box_iou",
    "box_xyxy_to_cxcywh",
    "generalized_box_iou",
    "inverse_sigmoid",
    "masks_to_boxes",
    "paired_generalized_box_iou",
]


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` (cx, cy, w, h) -> ``[..., 4]`` (cx - w/2, cy - h/2, cx + w/2, cy + h/2)."""
    return ops.box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` (x1, y1, x2, y2) -> ``[..., 4]`` ((x1+x2)/2, (y1+y2)/2, x2-x1, y2-y1)."""
    return ops.box_convert(boxes, in_fmt="xyxy", out_fmt="cxcywh")


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes: ``[N, 4]``, ``[M, 4]`` -> ``[N, M]``."""
    return ops.box_iou(boxes1, boxes2)


def generalized_box_iou(
    boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 0.0
) -> torch.Tensor:
    """Pairwise generalized IoU of xyxy boxes: ``[N, 4]``, ``[M, 4]`` -> ``[N, M]`` in [-1, 1].

    Args:
        boxes1, boxes2: xyxy boxes.
        eps: added to the union and to the enclosing area before dividing. 0 (default) is
            torchvision's / DETR's formula, where degenerate boxes (zero area on both sides)
            give NaN, so callers that cannot rule them out should sanitise the result; DINO and
            Mask DINO use 1e-6 (`iou = inter / (union + eps)`, `(enclosing - union) /
            (enclosing + eps)`).
    """
    if eps == 0.0:
        return ops.generalized_box_iou(boxes1, boxes2)
    return paired_generalized_box_iou(boxes1[:, None], boxes2[None], eps)


def paired_generalized_box_iou(
    boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 0.0
) -> torch.Tensor:
    """Generalized IoU of corresponding xyxy boxes: broadcastable ``[..., 4]`` -> ``[...]``.

    Same formula and ``eps`` as ``generalized_box_iou`` (whose diagonal this equals), without
    the ``[N, M]`` matrix.
    """
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    wh = torch.min(boxes1[..., 2:], boxes2[..., 2:]) - torch.max(boxes1[..., :2], boxes2[..., :2])
    wh = wh.clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1 + area2 - inter
    iou = inter / (union + eps)
    wh = torch.max(boxes1[..., 2:], boxes2[..., 2:]) - torch.min(boxes1[..., :2], boxes2[..., :2])
    wh = wh.clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - (enclosing - union) / (enclosing + eps)


def masks_to_boxes(
    masks: torch.Tensor,
    exclusive_max: bool = False,
    empty_box: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
) -> torch.Tensor:
    """Tight xyxy boxes around binary masks, in pixel units.

    Args:
        masks: ``[N, H, W]``, nonzero = foreground.
        exclusive_max: False gives the index of the last foreground column / row as (x2, y2)
            (torchvision's convention); True adds 1 (detectron2's ``BitMasks.get_bounding_boxes``).
        empty_box: the box returned for masks without foreground pixels.

    Returns:
        ``[N, 4]`` float32 boxes.
    """
    boxes = ops.masks_to_boxes(masks)
    if masks.shape[0] == 0:
        return boxes
    empty = ~masks.flatten(1).any(dim=1)
    if exclusive_max:
        boxes[:, 2:] += 1
    fill = torch.as_tensor(empty_box, dtype=boxes.dtype, device=boxes.device)
    return torch.where(empty[:, None], fill, boxes)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Logit of probabilities: ``log(max(x, eps) / max(1 - x, eps))`` after clamping x to [0, 1].

    Shapes: any -> same. ``inverse_sigmoid(0)`` is ``log(eps)``, finite.
    """
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))
