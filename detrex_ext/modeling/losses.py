"""Set-prediction losses of DETR-family models, normalised by the number of objects; and detrex's
loss modules (``FocalLoss``, ``CrossEntropyLoss``, ``L1Loss``, ``GIoULoss``, from
``weighted_losses``).

``num_objects`` / ``num_boxes`` / ``num_masks`` is a float, usually ``reduce_num_objects(n)``: the
ground-truth count of the local batch summed over all processes and divided by the world size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss
from torchvision.ops import sigmoid_focal_loss as _torchvision_focal

from detrex_ext.layers import (
    box_cxcywh_to_xyxy,
    calculate_uncertainty,
    draw_point_candidates,
    paired_generalized_box_iou,
    point_sample,
    select_uncertain_points,
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
    "point_sampled_mask_losses_many",
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
    return sigmoid_ce_rows(inputs, targets).sum() / num_masks


def sigmoid_ce_rows(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE with logits of each row: ``[N, P]``, ``[N, P]`` -> ``[N]``."""
    loss = F.binary_cross_entropy_with_logits(inputs, targets.to(inputs.dtype), reduction="none")
    return loss.mean(1)


def dice_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Dice loss ``1 - (2 sum(s t) + 1) / (sum(s) + sum(t) + 1)`` per mask (s = sigmoid(logit)).

    Shapes: inputs ``[N, ...]`` logits, targets ``[N, ...]`` in [0, 1] -> scalar (sum over masks
    / ``num_masks``).
    """
    return dice_rows(inputs, targets).sum() / num_masks


def dice_rows(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss of each mask (``dice_loss`` before its sum): ``[N, ...]`` x 2 -> ``[N]``."""
    probs = inputs.sigmoid().flatten(1)
    targets = targets.flatten(1).to(probs.dtype)
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return 1 - (numerator + 1) / (denominator + 1)


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
    return point_sampled_mask_losses_many(
        [mask_logits],
        target_masks,
        [target_index],
        [num_masks],
        num_points,
        oversample_ratio,
        importance_sample_ratio,
        generator,
    )[0]


def point_sampled_mask_losses_many(
    mask_logits: Sequence[torch.Tensor],
    target_masks: torch.Tensor,
    target_indices: Sequence[torch.Tensor | None],
    num_masks: Sequence[float],
    num_points: int = 12544,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
    generator: torch.Generator | None = None,
) -> list[dict[str, torch.Tensor]]:
    """``point_sampled_mask_losses`` of several jobs (e.g. a model's outputs) in one pass.

    The random draws are those of one call per job, in job order (jobs without masks draw
    nothing). Point selection, sampling and the per-mask BCE / dice are row-wise, so consecutive
    jobs with masks of one size are processed together while their candidates stay within
    ``_JOINED_CANDIDATE_BYTES`` (larger jobs alone, as in separate calls), and each job's
    losses are sums over its own rows: the values of separate calls.

    Args:
        mask_logits: per job ``[N_j, h, w]`` matched mask logits.
        target_masks: ``[T, H, W]`` binary target masks shared by the jobs.
        target_indices: per job ``[N_j]`` int64 rows of ``target_masks``; ``[None]`` for one
            job whose ``target_masks`` are its ``[N_j, H, W]`` matched masks.
        num_masks: per job its normaliser.
        num_points, oversample_ratio, importance_sample_ratio, generator: as there.

    Returns:
        Per job ``{"loss_mask", "loss_dice"}`` scalars.
    """
    if len(mask_logits) > 1 and any(index is None for index in target_indices):
        raise ValueError("several jobs share target_masks: give each its target index")
    results: list[dict[str, torch.Tensor] | None] = [None] * len(mask_logits)
    jobs = [j for j, logits in enumerate(mask_logits) if logits.shape[0] > 0]
    for j, logits in enumerate(mask_logits):
        if logits.shape[0] == 0:
            zero = logits.sum() * 0.0
            results[j] = {"loss_mask": zero, "loss_dice": zero.clone()}
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    for group in _joined_steps(mask_logits, jobs, num_sampled):
        # drawn here, step by step in job order: the order of one call per job
        draws = [
            draw_point_candidates(
                mask_logits[j].shape[0],
                num_points,
                oversample_ratio,
                importance_sample_ratio,
                mask_logits[j].device,
                torch.float32,
                generator,
            )
            for j in group
        ]
        logits = _cat([mask_logits[j] for j in group])[:, None].float()
        with torch.no_grad():
            extras = [extra for _, extra in draws]
            coords = select_uncertain_points(
                logits,
                _cat([candidates for candidates, _ in draws]),
                None if extras[0] is None else _cat(extras),
                calculate_uncertainty,
                num_uncertain,
            )
            index = _cat([target_indices[j] for j in group])  # None: the job's own masks
            labels = _sample_targets(target_masks, index, coords, logits.dtype)
        point_logits = point_sample(logits, coords).squeeze(1)
        sizes = [mask_logits[j].shape[0] for j in group]
        bce = sigmoid_ce_rows(point_logits, labels).split(sizes)
        dice = dice_rows(point_logits, labels).split(sizes)
        for k, j in enumerate(group):
            results[j] = {
                "loss_mask": bce[k].sum() / num_masks[j],
                "loss_dice": dice[k].sum() / num_masks[j],
            }
    return results


# Bytes of float32 PointRend candidates of the jobs processed in one step: small jobs (a small
# model's outputs) are joined, a job larger than this runs alone (R50's denoising outputs).
_JOINED_CANDIDATE_BYTES = 8 << 20


def _joined_steps(
    mask_logits: Sequence[torch.Tensor], jobs: list[int], num_sampled: int
) -> list[list[int]]:
    """Consecutive jobs with masks of one size, joined while their candidates stay within
    ``_JOINED_CANDIDATE_BYTES`` (each job in exactly one step, in order)."""
    steps: list[list[int]] = []
    rows = 0
    for j in jobs:
        count = mask_logits[j].shape[0]
        if steps:
            same_size = mask_logits[j].shape[1:] == mask_logits[steps[-1][0]].shape[1:]
            if same_size and (rows + count) * num_sampled * 2 * 4 <= _JOINED_CANDIDATE_BYTES:
                steps[-1].append(j)
                rows += count
                continue
        steps.append([j])
        rows = count
    return steps


def _cat(tensors: list) -> torch.Tensor | None:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def _sample_targets(
    target_masks: torch.Tensor,
    index: torch.Tensor | None,
    coords: torch.Tensor,
    dtype: torch.dtype,
) -> torch.Tensor:
    """``[N, P]`` values of ``target_masks[index]`` (``target_masks`` when None) at ``coords
    [N, P, 2]``: the matched masks gathered a few rows at a time (each step's float copy within
    ``_GATHERED_TARGETS_BYTES``), or, when that would take more steps than there are distinct
    masks (large masks), each distinct mask sampled on its own."""
    if index is None:
        return point_sample(target_masks[:, None].to(dtype), coords).squeeze(1)
    rows_per_step = max(1, _GATHERED_TARGETS_BYTES // (4 * target_masks[0].numel()))
    if len(index) > rows_per_step * len(target_masks):
        return _sample_indexed_masks(target_masks, index, coords, dtype)
    steps = [
        point_sample(
            target_masks[index[start : start + rows_per_step]][:, None].to(dtype),
            coords[start : start + rows_per_step],
        ).squeeze(1)
        for start in range(0, len(index), rows_per_step)
    ]
    return _cat(steps)


# Bytes of gathered float target masks per sampling step (see _sample_targets).
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
