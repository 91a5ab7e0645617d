"""Mask DINO post-processing written for exported graphs: batched, fixed shapes, tensors only.

These compute what `inference.py` computes per image (instance top-k, semantic map, panoptic
merge with the official thresholds and stuff merging) for a whole batch of images that share one
input size `(H, W)`, with no Python control flow on values and no data-dependent shapes: what
`inference.py` drops (non-thing pairs of panoptic models, queries below the keep threshold,
non-segments) is kept with a flag. The outputs therefore have fixed sizes and the graph exports to
ONNX and `torch.export` unchanged.

Inputs, per batch: class logits `mask_cls [B, Q, C]` (C + 1 with the semantic CE loss), mask
logits `[B, Q, h, w]` (stride 4) and boxes `[B, Q, 4]` (normalised cxcywh over the input).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from detrex_ext.layers import box_cxcywh_to_xyxy

__all__ = [
    "instance_predictions",
    "panoptic_predictions",
    "resize_masks",
    "semantic_predictions",
]


def resize_masks(mask_logits: Tensor, size: Sequence[int]) -> Tensor:
    """`[B, K, h, w]` mask logits -> `[B, K, H, W]` (bilinear, align_corners=False), the official
    resize to the padded input size (which is the whole input here)."""
    return F.interpolate(mask_logits, size=tuple(size), mode="bilinear", align_corners=False)


def _is_thing(labels: Tensor, thing_ids: Sequence[int] | None) -> Tensor:
    """Boolean `labels`-shaped tensor: the label is a thing class (all True without thing_ids)."""
    if thing_ids is None:
        return torch.ones_like(labels, dtype=torch.bool)
    things = torch.tensor(list(thing_ids), dtype=labels.dtype, device=labels.device)
    return (labels.unsqueeze(-1) == things).any(-1)


def instance_predictions(
    mask_cls: Tensor,
    mask_logits: Tensor,
    boxes: Tensor,
    *,
    num_classes: int,
    topk: int,
    image_size: Sequence[int],
    thing_ids: Sequence[int] | None = None,
    focus_on_box: bool = False,
    full_size_masks: Tensor | None = None,
) -> dict[str, Tensor]:
    """Top-k (query, class) pairs of every image, as `inference.select_topk_queries` and
    `inference.instance_inference` compute them.

    Args:
        mask_cls: `[B, Q, C]` class logits; mask_logits: `[B, Q, h, w]`; boxes: `[B, Q, 4]`.
        num_classes: C (a trailing "no object" logit is not a class).
        topk: pairs per image (`test_topk_per_image`); K = min(topk, Q * C).
        image_size: `(H, W)` of the input; masks and boxes are returned at this size.
        thing_ids: panoptic models keep only thing classes: other pairs get `valid = False`.
        focus_on_box: score = class score (no mask score).
        full_size_masks: `[B, Q, H, W]` mask logits already at `image_size` (computed once for
            the semantic and panoptic outputs), else the selected masks are resized here.

    Returns:
        `scores [B, K]` (class score x mean mask probability inside the mask), `classes [B, K]`
        (int64), `boxes [B, K, 4]` (absolute xyxy), `mask_logits [B, K, H, W]` and
        `valid [B, K]` (bool), in descending class-score order.
    """
    batch, num_queries = mask_cls.shape[:2]
    height, width = int(image_size[0]), int(image_size[1])
    scores = mask_cls[..., :num_classes].sigmoid().flatten(1)  # [B, Q * C]
    k = min(topk, num_queries * num_classes)
    scores, flat_index = scores.topk(k, dim=1)
    labels = flat_index % num_classes
    queries = torch.div(flat_index, num_classes, rounding_mode="floor")
    if full_size_masks is not None:
        index = queries[:, :, None, None].expand(-1, -1, height, width)
        masks = full_size_masks.gather(1, index)
    else:
        index = queries[:, :, None, None].expand(-1, -1, *mask_logits.shape[-2:])
        masks = resize_masks(mask_logits.gather(1, index), (height, width))
    foreground = (masks > 0).to(masks.dtype)
    mask_scores = (masks.sigmoid() * foreground).flatten(2).sum(2) / (
        foreground.flatten(2).sum(2) + 1e-6
    )
    selected = boxes.gather(1, queries[..., None].expand(-1, -1, 4))
    scale = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
    return {
        "scores": scores if focus_on_box else scores * mask_scores,
        "classes": labels,
        "boxes": box_cxcywh_to_xyxy(selected) * scale,
        "mask_logits": masks,
        "valid": _is_thing(labels, thing_ids),
    }


def _class_probabilities(
    mask_cls: Tensor, semantic_ce_loss: bool, transform_eval: bool, temperature: float
) -> Tensor:
    if semantic_ce_loss:
        return F.softmax(mask_cls, dim=-1)[..., :-1]
    probs = mask_cls.sigmoid()
    if transform_eval:
        probs = F.softmax(probs / temperature, dim=-1)
    return probs


def semantic_predictions(
    mask_cls: Tensor,
    full_size_masks: Tensor,
    *,
    semantic_ce_loss: bool,
    transform_eval: bool,
    temperature: float,
) -> Tensor:
    """Per-pixel class map `[B, H, W]` (int64): the argmax over classes of
    `inference.semantic_inference`'s scores (sum over queries of class prob x mask prob).

    Args:
        mask_cls: `[B, Q, C]`; full_size_masks: `[B, Q, H, W]` mask logits at the input size.
    """
    probs = _class_probabilities(mask_cls, semantic_ce_loss, transform_eval, temperature)
    scores = torch.einsum("bqc,bqhw->bchw", probs, full_size_masks.sigmoid())
    return scores.argmax(1)


def _count(index: Tensor, bins: int) -> Tensor:
    """Occurrences of each value in `[0, bins)` of an int64 `[B, N]` index: `[B, bins]`."""
    counts = torch.zeros(index.shape[0], bins, dtype=torch.int64, device=index.device)
    return counts.scatter_add(1, index, torch.ones_like(index))


def _segment_ids(segment: Tensor, labels: Tensor, thing: Tensor) -> tuple[Tensor, Tensor]:
    """The official id assignment, without a loop over queries.

    Query k (in query order) that is a segment gets a new id when it is a thing, or the first
    segment of its stuff class; a later segment of the same stuff class reuses that id.

    Args:
        segment, thing: bool `[B, Q]`; labels: int64 `[B, Q]`.

    Returns:
        `(segment_id [B, Q], new_segment [B, Q])`; id 0 for queries that are no segment.
    """
    num_queries = labels.shape[1]
    same_class = labels[:, :, None] == labels[:, None, :]  # [B, k, j]
    earlier = torch.ones(num_queries, num_queries, dtype=torch.bool, device=labels.device)
    earlier = earlier.tril(-1)  # j < k
    stuff_segment = segment & ~thing
    merged = stuff_segment & (same_class & earlier & stuff_segment[:, None, :]).any(-1)
    new_segment = segment & ~merged
    new_id = torch.cumsum(new_segment.to(torch.int64), 1) * new_segment
    # a merged stuff segment takes the id of the (one) new segment of its class before it
    owner = same_class & earlier & (new_segment & ~thing)[:, None, :]
    merged_id = (owner.to(torch.int64) * new_id[:, None, :]).amax(-1)
    return torch.where(merged, merged_id, new_id), new_segment


def panoptic_predictions(
    mask_cls: Tensor,
    full_size_masks: Tensor,
    *,
    thing_ids: Sequence[int],
    object_mask_threshold: float,
    overlap_threshold: float,
    transform_eval: bool,
    temperature: float,
) -> tuple[Tensor, Tensor]:
    """Panoptic maps and segment tables, as `inference.panoptic_keep` + `panoptic_merge`.

    A query is kept when its best sigmoid class score exceeds `object_mask_threshold`; each pixel
    goes to the kept query with the highest score x mask probability (first query on ties) and
    keeps that query's segment id when the probability there is >= 0.5; a kept query is a segment
    when its won, own (probability >= 0.5) and region areas are non-empty and won / own >=
    `overlap_threshold` (computed in float32).

    Args:
        mask_cls: `[B, Q, C]` class logits; full_size_masks: `[B, Q, H, W]` mask logits.

    Returns:
        `panoptic_seg [B, H, W]` (int64 segment ids, 0 = void) and `segments [B, Q, 4]` (int64),
        one row per query: `(is_new_segment, id, category_id, isthing)`; the rows with
        `is_new_segment = 1` are the `segments_info` of the image, in id order.
    """
    batch, num_queries = mask_cls.shape[:2]
    probs = mask_cls.sigmoid()
    scores, labels = probs.max(-1)
    keep = scores > object_mask_threshold
    if transform_eval:
        scores, labels = F.softmax(probs / temperature, dim=-1).max(-1)
    mask_probs = full_size_masks.sigmoid()
    weighted = scores[:, :, None, None] * mask_probs
    weighted = torch.where(keep[:, :, None, None], weighted, torch.full_like(weighted, -1.0))
    winner = weighted.argmax(1)  # [B, H, W]; a kept query whenever one is kept
    in_own_mask = mask_probs.gather(1, winner[:, None])[:, 0] >= 0.5
    winner_kept = keep.gather(1, winner.flatten(1)).view_as(winner)
    in_region = in_own_mask & winner_kept
    own_area = (mask_probs >= 0.5).flatten(2).sum(2)
    won_area = _count(winner.flatten(1), num_queries)
    region = torch.where(in_region, winner, torch.full_like(winner, num_queries))
    region_area = _count(region.flatten(1), num_queries + 1)[:, :num_queries]
    overlap = won_area.to(torch.float32) / own_area.clamp(min=1).to(torch.float32)
    segment = (
        keep & (won_area > 0) & (own_area > 0) & (region_area > 0) & (overlap >= overlap_threshold)
    )
    thing = _is_thing(labels, thing_ids)
    segment_id, new_segment = _segment_ids(segment, labels, thing)
    segment_map = segment_id.gather(1, winner.flatten(1)).view_as(winner)
    panoptic_seg = torch.where(in_region, segment_map, torch.zeros_like(segment_map))
    table = torch.stack(
        [new_segment.to(torch.int64), segment_id, labels, thing.to(torch.int64)], -1
    )
    return panoptic_seg, table
