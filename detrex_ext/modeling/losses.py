"""Set-prediction losses of DETR-family models, normalised by the number of objects; and detrex's
loss modules (``FocalLoss``, ``CrossEntropyLoss``, ``L1Loss``, ``GIoULoss``, from
``weighted_losses``).

``num_objects`` / ``num_boxes`` / ``num_masks`` is a float, usually ``reduce_num_objects(n)``: the
ground-truth count of the local batch summed over all processes and divided by the world size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss
from torchvision.ops import sigmoid_focal_loss as _torchvision_focal

from detrex_ext.layers import (
    box_cxcywh_to_xyxy,
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    paired_generalized_box_iou,
    point_sample,
)
from detrex_ext.utils import comm

from .weighted_losses import CrossEntropyLoss, FocalLoss, GIoULoss, L1Loss, weight_reduce_loss

__all__ = [
    "CrossEntropyLoss",
    "FocalLoss",
    "GIoULoss",
    "L1Loss",
    "dice_loss",
    "giou_loss",
    "paired_giou_loss",
    "l1_box_loss",
    "point_sampled_mask_losses",
    "reduce_num_objects",
    "sigmoid_ce_loss",
    "sigmoid_focal_loss",
    "weight_reduce_loss",
]


def reduce_num_objects(
    num_objects: float | torch.Tensor, device: torch.device | None = None
) -> float:
    """Average object count per process: ``sum over ranks / world size``, at least 1.

    Args:
        num_objects: this process's ground-truth count (int, float or scalar tensor).
        device: device for the all-reduce (the communication backend's device; default: the
            tensor's device, else CPU).

    Returns:
        A Python float >= 1, identical on every rank.
    """
    if isinstance(num_objects, torch.Tensor):
        device = device or num_objects.device
    elif comm.get_world_size() == 1:
        # A count known on the host needs no device round trip (and no CUDA sync) alone.
        return max(float(num_objects), 1.0)
    count = torch.as_tensor([float(num_objects)], dtype=torch.float64, device=device)
    count = comm.all_reduce_sum(count) / comm.get_world_size()
    return max(count.item(), 1.0)


def sigmoid_focal_loss(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    num_boxes: float,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Sigmoid focal loss with the Deformable-DETR / DINO / Mask DINO normalisation.

    Element loss ``alpha_t * (1 - p_t)**gamma * BCE(x, t)`` (``alpha < 0`` disables alpha), then
    **mean over axis 1** (queries), sum over the rest, divided by ``num_boxes``. Multiply by Q
    to get ``sum(all elements) / num_boxes``, as the DETR-family criteria do.

    Args:
        inputs: ``[B, Q, C]`` logits (or ``[N, K, ...]``: axis 1 is averaged).
        targets: same shape, values in [0, 1] (one-hot; all-zero rows for "no object").
        num_boxes: normaliser.

    Returns:
        Scalar loss.
    """
    loss = _torchvision_focal(inputs, targets.to(inputs.dtype), alpha=alpha, gamma=gamma)
    return loss.mean(1).sum() / num_boxes


def sigmoid_ce_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Per-mask mean binary cross-entropy with logits, summed over masks, / ``num_masks``.

    Shapes: inputs ``[N, P]`` logits (P points or pixels), targets ``[N, P]`` in [0, 1] -> scalar.
    """
    loss = F.binary_cross_entropy_with_logits(inputs, targets.to(inputs.dtype), reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Dice loss ``1 - (2 sum(s t) + 1) / (sum(s) + sum(t) + 1)`` per mask (s = sigmoid(logit)).

    Shapes: inputs ``[N, ...]`` logits, targets ``[N, ...]`` in [0, 1] -> scalar (sum over masks
    / ``num_masks``).
    """
    probs = inputs.sigmoid().flatten(1)
    targets = targets.flatten(1).to(probs.dtype)
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def point_sampled_mask_losses(
    mask_logits: torch.Tensor,
    target_masks: torch.Tensor,
    num_masks: float,
    num_points: int = 12544,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
    generator: torch.Generator | None = None,
    target_index: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Mask2Former's mask losses on PointRend-selected points.

    Without gradient, ``num_points * oversample_ratio`` uniform candidates are drawn per mask,
    the ``importance_sample_ratio`` share most uncertain under the predicted logits
    (``-|logit|``) is kept and the rest is drawn uniformly. Predictions and targets are sampled
    bilinearly (align_corners=False) at those points; targets may be fractional at edges.

    Args:
        mask_logits: ``[N, h, w]`` matched mask logits.
        target_masks: ``[N, H, W]`` matched binary masks (any resolution, e.g. the padded image),
            or with ``target_index`` the ``[T, H, W]`` distinct ones.
        num_masks: normaliser.
        num_points, oversample_ratio, importance_sample_ratio: PointRend sampling settings.
        generator: random generator for the points.
        target_index: ``[N]`` int64, mask ``n`` is matched to ``target_masks[target_index[n]]``
            (same values as passing ``target_masks[target_index]``, without building that
            ``[N, H, W]`` tensor and its float copy: a target matched by several queries, as
            in denoising groups, is converted once).

    Returns:
        ``{"loss_mask": sigmoid_ce_loss, "loss_dice": dice_loss}`` scalars (zero-valued but
        differentiable when N = 0).
    """
    if mask_logits.shape[0] == 0:
        zero = mask_logits.sum() * 0.0
        return {"loss_mask": zero, "loss_dice": zero.clone()}
    logits = mask_logits[:, None].float()
    with torch.no_grad():
        coords = get_uncertain_point_coords_with_randomness(
            logits,
            calculate_uncertainty,
            num_points,
            oversample_ratio,
            importance_sample_ratio,
            generator=generator,
        )
        gathered_bytes = 4 * len(coords) * target_masks[0].numel()
        if target_index is not None and gathered_bytes <= _GATHERED_TARGETS_BYTES:
            target_masks, target_index = target_masks[target_index], None  # small: one call
        if target_index is None:
            labels = point_sample(target_masks[:, None].to(logits), coords).squeeze(1)
        else:
            labels = _sample_indexed_masks(target_masks, target_index, coords, logits.dtype)
    point_logits = point_sample(logits, coords).squeeze(1)
    return {
        "loss_mask": sigmoid_ce_loss(point_logits, labels, num_masks),
        "loss_dice": dice_loss(point_logits, labels, num_masks),
    }


# Up to this size the matched target masks are gathered and sampled in one call; larger, each
# distinct target is sampled on its own (a loop, but no [N, H, W] float copy).
_GATHERED_TARGETS_BYTES = 8 << 20


def _sample_indexed_masks(
    masks: torch.Tensor, index: torch.Tensor, coords: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """``point_sample(masks[index][:, None].to(dtype), coords)[:, 0]`` with one ``grid_sample``
    per distinct mask over the points of all its rows (bilinear sampling reads one map per
    point, so the values are the same). Shapes: ``[T, H, W]``, ``[N]``, ``[N, P, 2]`` -> ``[N, P]``.
    """
    labels = coords.new_empty(coords.shape[:2], dtype=dtype)
    order = torch.argsort(index, stable=True)
    counts = torch.bincount(index, minlength=masks.shape[0]).tolist()
    start = 0
    for target, count in enumerate(counts):
        if count == 0:
            continue
        rows = order[start : start + count]
        start += count
        points = coords[rows].view(1, count * coords.shape[1], 2)
        plane = masks[target][None, None].to(device=coords.device, dtype=dtype)
        sampled = point_sample(plane, points)  # [1, 1, count * P]
        labels[rows] = sampled.view(count, -1)
    return labels


def l1_box_loss(
    pred_boxes: torch.Tensor, target_boxes: torch.Tensor, num_boxes: float
) -> torch.Tensor:
    """``sum |pred - target|`` over matched boxes and coordinates / ``num_boxes``.

    Shapes: ``[N, 4]``, ``[N, 4]`` (normalised cxcywh) -> scalar.
    """
    return F.l1_loss(pred_boxes, target_boxes.to(pred_boxes.dtype), reduction="sum") / num_boxes


def giou_loss(
    pred_boxes: torch.Tensor, target_boxes: torch.Tensor, num_boxes: float, eps: float = 0.0
) -> torch.Tensor:
    """``sum (1 - GIoU(pred_i, target_i))`` over matched pairs / ``num_boxes``.

    Shapes: ``[N, 4]``, ``[N, 4]`` cxcywh boxes -> scalar. ``eps`` > 0 uses the DINO / Mask DINO
    formula (``eps`` added to union and enclosing area, see ``generalized_box_iou``); 0 uses
    torchvision's ``generalized_box_iou_loss``.
    """
    return paired_giou_loss(pred_boxes, target_boxes, eps).sum() / num_boxes


def paired_giou_loss(
    pred_boxes: torch.Tensor, target_boxes: torch.Tensor, eps: float = 0.0
) -> torch.Tensor:
    """``1 - GIoU(pred_i, target_i)`` per pair (``giou_loss`` before its sum).

    Shapes: ``[N, 4]``, ``[N, 4]`` cxcywh boxes -> ``[N]``.
    """
    pred_xyxy = box_cxcywh_to_xyxy(pred_boxes)
    target_xyxy = box_cxcywh_to_xyxy(target_boxes.to(pred_boxes.dtype))
    if eps != 0.0:
        return 1 - paired_generalized_box_iou(pred_xyxy, target_xyxy, eps)
    return generalized_box_iou_loss(pred_xyxy, target_xyxy, reduction="none")
