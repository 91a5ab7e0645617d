"""Mask DINO inference post-processing: instance, semantic and panoptic results of one image.

These follow the official `MaskDINO.{instance,semantic,panoptic}_inference` (spec section 6) and
work on one image's predictions:

* `mask_cls` `[Q, C]` class logits (C + 1 with the semantic CE loss),
* mask logits `[Q, H, W]` already resized to the resolution wanted,
* boxes `[Q, 4]` normalised cxcywh over the padded canvas.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from detrex_ext.layers import box_cxcywh_to_xyxy
from detrex_ext.structures import Boxes, Instances

__all__ = [
    "select_topk_queries",
    "instance_inference",
    "semantic_inference",
    "panoptic_inference",
    "scale_boxes",
]


def select_topk_queries(
    mask_cls: Tensor, num_classes: int, topk: int, thing_ids: Sequence[int] | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k (query, class) pairs by sigmoid score over the flattened `Q * C` scores.

    A query can be selected several times with different classes. With `thing_ids` (panoptic
    models) pairs whose class is not a thing class are dropped after the top-k.

    Args:
        mask_cls: `[Q, C]` class logits.
        num_classes: C.
        topk: number of pairs kept (detectron2's `test_topk_per_image`).
        thing_ids: contiguous ids of thing classes, or None to keep every class.

    Returns:
        scores `[K]`, labels `[K]` (int64) and query indices `[K]` (int64), K <= topk, in the
        order `torch.topk(sorted=False)` returns them.
    """
    # A softmax-CE model has a trailing "no object" logit: it is not a class.
    scores = mask_cls[:, :num_classes].sigmoid().flatten(0, 1)
    k = min(topk, scores.numel())
    scores, flat_idx = scores.topk(k, sorted=False)
    labels = flat_idx % num_classes
    queries = torch.div(flat_idx, num_classes, rounding_mode="floor")
    if thing_ids is not None:
        things = torch.as_tensor(list(thing_ids), dtype=labels.dtype, device=labels.device)
        keep = torch.isin(labels, things)
        scores, labels, queries = scores[keep], labels[keep], queries[keep]
    return scores, labels, queries


def scale_boxes(boxes: Tensor, scale_h: float, scale_w: float) -> Tensor:
    """Normalised cxcywh `[N, 4]` -> absolute xyxy, multiplied by (w, h, w, h); not clipped."""
    scale = torch.tensor([scale_w, scale_h, scale_w, scale_h]).to(boxes)
    return box_cxcywh_to_xyxy(boxes) * scale


def instance_inference(
    scores: Tensor,
    labels: Tensor,
    mask_logits: Tensor,
    boxes: Tensor,
    image_size: tuple[int, int],
    focus_on_box: bool = False,
) -> Instances:
    """Build the `Instances` of the selected (query, class) pairs.

    Args:
        scores, labels: `[K]` class scores and labels from `select_topk_queries`.
        mask_logits: `[K, H, W]` mask logits of the selected queries at the output size.
        boxes: `[K, 4]` absolute xyxy boxes at the output size.
        image_size: `(H, W)`.
        focus_on_box: score = class score only (the mask score is taken as 1).

    Returns:
        Instances with `pred_masks` float `[K, H, W]` (0/1), `pred_boxes`, `scores`
        (class score x mean mask probability inside the mask) and `pred_classes`.
    """
    result = Instances(image_size)
    pred_masks = (mask_logits > 0).float()
    result.pred_masks = pred_masks
    result.pred_boxes = Boxes(boxes)
    flat = pred_masks.flatten(1)
    mask_scores = (mask_logits.sigmoid().flatten(1) * flat).sum(1) / (flat.sum(1) + 1e-6)
    result.scores = scores if focus_on_box else scores * mask_scores
    result.pred_classes = labels
    return result


def semantic_inference(
    mask_cls: Tensor,
    mask_logits: Tensor,
    semantic_ce_loss: bool,
    transform_eval: bool,
    temperature: float,
) -> Tensor:
    """Per-pixel class scores `[C, H, W]` = sum over queries of class prob x mask prob.

    With the CE loss the class probabilities are a softmax without the "no object" column;
    otherwise sigmoid scores, optionally sharpened by softmax(sigmoid / temperature).
    """
    if semantic_ce_loss:
        probs = F.softmax(mask_cls, dim=-1)[..., :-1]
    else:
        probs = mask_cls.sigmoid()
        if transform_eval:
            probs = F.softmax(probs / temperature, dim=-1)
    return torch.einsum("qc,qhw->chw", probs, mask_logits.sigmoid())


def panoptic_inference(
    mask_cls: Tensor,
    mask_logits: Tensor,
    thing_ids: Sequence[int],
    object_mask_threshold: float,
    overlap_threshold: float,
    transform_eval: bool,
    temperature: float,
) -> tuple[Tensor, list[dict]]:
    """Merge query masks into a panoptic map (official thresholds and stuff merging).

    Queries are kept when their sigmoid score exceeds `object_mask_threshold`; each pixel goes to
    the kept query with the highest score x mask probability; a query becomes a segment when its
    won area is at least `overlap_threshold` of its own (prob >= 0.5) area. Stuff classes reuse
    the first segment id of the same class.

    Returns:
        `(panoptic_seg int32 [H, W], segments_info)`, 0 = void; segments_info entries are
        `{"id", "isthing", "category_id"}` with contiguous category ids.
    """
    probs = mask_cls.sigmoid()
    scores, labels = probs.max(-1)
    mask_probs = mask_logits.sigmoid()
    keep = scores > object_mask_threshold
    if transform_eval:
        scores, labels = F.softmax(probs / temperature, dim=-1).max(-1)
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], mask_probs[keep]
    h, w = mask_logits.shape[-2:]
    panoptic_seg = torch.zeros((h, w), dtype=torch.int32, device=mask_logits.device)
    segments_info: list[dict] = []
    if cur_masks.shape[0] == 0:
        return panoptic_seg, segments_info

    cur_mask_ids = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
    things = set(int(t) for t in thing_ids)
    classes = cur_classes.tolist()
    won = (
        cur_mask_ids[None] == torch.arange(len(classes), device=cur_mask_ids.device)[:, None, None]
    )
    own = cur_masks >= 0.5
    regions = won & own
    # One transfer for all areas instead of three per query.
    areas = torch.stack([won.flatten(1).sum(1), own.flatten(1).sum(1), regions.flatten(1).sum(1)])
    mask_area, original_area, region_area = areas.tolist()
    stuff_segment: dict[int, int] = {}
    segment_id = 0
    for k, pred_class in enumerate(classes):
        if not (mask_area[k] > 0 and original_area[k] > 0 and region_area[k] > 0):
            continue
        if mask_area[k] / original_area[k] < overlap_threshold:
            continue
        isthing = pred_class in things
        if not isthing:
            if pred_class in stuff_segment:
                panoptic_seg[regions[k]] = stuff_segment[pred_class]
                continue
            stuff_segment[pred_class] = segment_id + 1
        segment_id += 1
        panoptic_seg[regions[k]] = segment_id
        segments_info.append({"id": segment_id, "isthing": isthing, "category_id": int(pred_class)})
    return panoptic_seg, segments_info
