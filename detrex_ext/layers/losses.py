"""detectron2's box regression losses DIoU and CIoU (Zheng et al., arXiv 1911.08287)."""

from __future__ import annotations

import math

import torch

__all__ = ["ciou_loss", "diou_loss"]


def _iou_and_center_terms(
    boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Element-wise IoU and ``center distance^2 / enclosing-box diagonal^2`` of xyxy boxes."""
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    if not bool((x2 >= x1).all() and (y2 >= y1).all()):
        raise ValueError("boxes1 has a box with x2 < x1 or y2 < y1 (expected x1, y1, x2, y2)")
    inter_w = (torch.min(x2, x2g) - torch.max(x1, x1g)).clamp(min=0)
    inter_h = (torch.min(y2, y2g) - torch.max(y1, y1g)).clamp(min=0)
    intersection = inter_w * inter_h
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - intersection + eps
    iou = intersection / union
    diagonal2 = (torch.max(x2, x2g) - torch.min(x1, x1g)) ** 2
    diagonal2 = diagonal2 + (torch.max(y2, y2g) - torch.min(y1, y1g)) ** 2 + eps
    distance2 = ((x1 + x2 - x1g - x2g) / 2) ** 2 + ((y1 + y2 - y1g - y2g) / 2) ** 2
    return iou, distance2 / diagonal2


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()
    if reduction == "sum":
        return loss.sum()
    if reduction != "none":
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    return loss


def diou_loss(
    boxes1: torch.Tensor, boxes2: torch.Tensor, reduction: str = "none", eps: float = 1e-7
) -> torch.Tensor:
    """Distance-IoU loss ``1 - IoU + d^2 / c^2`` (d: distance of the box centres, c: diagonal of
    the smallest enclosing box).

    Args:
        boxes1, boxes2: ``[N, 4]`` or ``[4]`` xyxy boxes.
        reduction: ``"none"`` (per box), ``"mean"`` or ``"sum"``.
        eps: added to the union and the squared diagonal.
    """
    iou, center_term = _iou_and_center_terms(boxes1, boxes2, eps)
    return _reduce(1 - iou + center_term, reduction)


def ciou_loss(
    boxes1: torch.Tensor, boxes2: torch.Tensor, reduction: str = "none", eps: float = 1e-7
) -> torch.Tensor:
    """Complete-IoU loss: DIoU plus ``alpha * v`` with ``v = 4 / pi^2 (atan(w_g / h_g) -
    atan(w / h))^2`` (aspect-ratio consistency; ``boxes2`` is the target) and
    ``alpha = v / (1 - IoU + v)`` (no gradient through alpha). Arguments as ``diou_loss``."""
    iou, center_term = _iou_and_center_terms(boxes1, boxes2, eps)
    w, h = boxes1[..., 2] - boxes1[..., 0], boxes1[..., 3] - boxes1[..., 1]
    w_gt, h_gt = boxes2[..., 2] - boxes2[..., 0], boxes2[..., 3] - boxes2[..., 1]
    v = (4 / math.pi**2) * (torch.atan(w_gt / h_gt) - torch.atan(w / h)) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return _reduce(1 - iou + center_term + alpha * v, reduction)
