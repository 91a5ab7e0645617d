"""Mask DINO inference post-processing: instance, semantic and panoptic results of one image.

These follow the official `MaskDINO.{instance,semantic,panoptic}_inference` (spec section 6) and
work on one image's predictions:

* `mask_cls` `[Q, C]` class logits (C + 1 with the semantic CE loss),
* mask logits `[Q, H, W]` already resized to the resolution wanted,
* boxes `[Q, 4]` normalised cxcywh over the padded canvas.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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
    "panoptic_keep",
    "panoptic_merge",
    "assign_segment_ids",
    "scale_boxes",
    "resize_mask_logits",
    "subset_resize_is_exact",
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


# PyTorch's CPU bilinear kernel switches to a channel-vectorised variant for outputs with
# H + W <= 128, whose rounding depends on a channel's position among the channels; a query
# subset could then differ from the all-query resize in the last bit. Maps that small cost
# nothing to resize for every query, so subsets are only resized above this (with a margin).
MIN_SIDES_FOR_SUBSET_RESIZE = 256


def subset_resize_is_exact(padded_size: Sequence[int], output_size: Sequence[int]) -> bool:
    """Whether `resize_mask_logits` on a query subset reproduces the all-query resize exactly."""
    return min(sum(padded_size), sum(output_size)) > MIN_SIDES_FOR_SUBSET_RESIZE


def resize_mask_logits(
    masks: Tensor,
    padded_size: Sequence[int],
    image_size: Sequence[int],
    output_size: Sequence[int],
) -> Tensor:
    """Resize some queries' mask logits the way the official code resizes all of them.

    Bilinear (align_corners=False) to the padded input size, crop to the image, bilinear to the
    output size. The queries go along the batch axis (one channel each), so the kernel PyTorch
    picks does not depend on how many there are (on CPU it does for channels: 3 channels on one
    thread take a vectorised kernel): each query gets the values the all-query resize gives it
    when `subset_resize_is_exact` holds. The CUDA kernel computes every channel alike.

    Args:
        masks: `[K, h, w]` mask logits (K may be 0).
        padded_size: `(H_pad, W_pad)`; image_size: `(h_img, w_img)` inside it; output_size:
            `(height, width)`.

    Returns:
        `[K, height, width]`.
    """
    height, width = int(output_size[0]), int(output_size[1])
    if masks.shape[0] == 0:
        return masks.new_zeros((0, height, width))
    masks = F.interpolate(
        masks[:, None], size=tuple(padded_size), mode="bilinear", align_corners=False
    )
    masks = masks[:, :, : image_size[0], : image_size[1]]
    if tuple(masks.shape[-2:]) != (height, width):
        masks = F.interpolate(masks, size=(height, width), mode="bilinear", align_corners=False)
    return masks[:, 0].contiguous()


def instance_inference(
    scores: Tensor,
    labels: Tensor,
    mask_logits: Tensor | Iterable[Tensor],
    boxes: Tensor,
    image_size: tuple[int, int],
    focus_on_box: bool = False,
) -> Instances:
    """Build the `Instances` of the selected (query, class) pairs.

    Args:
        scores, labels: `[K]` class scores and labels from `select_topk_queries`.
        mask_logits: `[K, H, W]` mask logits of the selected queries at the output size, or an
            iterable of consecutive `[k_i, H, W]` chunks of them (sum k_i = K), e.g. made one at a
            time so that the whole `[K, H, W]` logits never exist at once.
        boxes: `[K, 4]` absolute xyxy boxes at the output size.
        image_size: `(H, W)`.
        focus_on_box: score = class score only (the mask score is taken as 1).

    Returns:
        Instances with `pred_masks` float `[K, H, W]` (0/1), `pred_boxes`, `scores`
        (class score x mean mask probability inside the mask) and `pred_classes`.
    """
    chunks = [mask_logits] if isinstance(mask_logits, Tensor) else mask_logits
    pred_masks = torch.empty((scores.shape[0], *image_size), device=scores.device)
    mask_scores = torch.empty(scores.shape, device=scores.device)
    start = 0
    for logits in chunks:
        stop = start + logits.shape[0]
        binary = pred_masks[start:stop]
        torch.gt(logits, 0, out=binary)  # 0/1 in the float output
        flat = binary.flatten(1)
        inside = logits.sigmoid().flatten(1) * flat
        mask_scores[start:stop] = inside.sum(1) / (flat.sum(1) + 1e-6)
        start = stop
    if start != scores.shape[0]:
        raise ValueError(f"mask logits of {start} queries for {scores.shape[0]} scores")
    result = Instances(image_size)
    result.pred_masks = pred_masks
    result.pred_boxes = Boxes(boxes)
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


def panoptic_keep(
    mask_cls: Tensor, object_mask_threshold: float, transform_eval: bool, temperature: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The queries panoptic inference keeps, decided from the class logits alone.

    A query is kept when its best sigmoid class score exceeds `object_mask_threshold`; with
    `transform_eval` its score and label are then re-expressed as the max of
    softmax(sigmoid / temperature) (the threshold still applies to the sigmoid score).

    Args:
        mask_cls: `[Q, C]` class logits.

    Returns:
        query indices `[K]` (int64, ascending), scores `[K]` and labels `[K]` of the kept
        queries. Finding K is the one host synchronisation here.
    """
    probs = mask_cls.sigmoid()
    scores, labels = probs.max(-1)
    keep = scores > object_mask_threshold
    if transform_eval:
        scores, labels = F.softmax(probs / temperature, dim=-1).max(-1)
    queries = keep.nonzero().squeeze(1)
    return queries, scores[queries], labels[queries]


def _count(index: Tensor, bins: int) -> Tensor:
    """Occurrences of each value of an int64 `index` (any shape) in `[0, bins)`: `[bins]` int64.

    A scatter-add rather than `torch.bincount`, which synchronises on CUDA to size its output.
    """
    flat = index.flatten()
    counts = torch.zeros(bins, dtype=torch.int64, device=index.device)
    return counts.scatter_add_(0, flat, torch.ones_like(flat))


def assign_segment_ids(
    labels: Sequence[int],
    won_area: Sequence[int],
    own_area: Sequence[int],
    region_area: Sequence[int],
    thing_ids: Sequence[int],
    overlap_threshold: float,
) -> tuple[list[int], list[dict]]:
    """The official per-query segment decisions, on host scalars (K small).

    Query k (in kept order) becomes a segment when its won area (pixels where it is the argmax),
    own area (pixels where its probability is >= 0.5) and region (both) are non-empty and
    won / own >= `overlap_threshold`. Thing classes get a new id; a stuff class reuses the id
    of its first segment (no new `segments_info` entry).

    Returns:
        `(segment_id_of_query [K], segments_info)`; 0 for a query that is not a segment.
    """
    things = set(int(t) for t in thing_ids)
    ids = [0] * len(labels)
    segments_info: list[dict] = []
    stuff_segment: dict[int, int] = {}
    for k, label in enumerate(labels):
        if not (won_area[k] > 0 and own_area[k] > 0 and region_area[k] > 0):
            continue
        if won_area[k] / own_area[k] < overlap_threshold:
            continue
        isthing = label in things
        if not isthing and label in stuff_segment:
            ids[k] = stuff_segment[label]
            continue
        ids[k] = len(segments_info) + 1
        if not isthing:
            stuff_segment[label] = ids[k]
        segments_info.append({"id": ids[k], "isthing": isthing, "category_id": int(label)})
    return ids, segments_info


def panoptic_merge(
    scores: Tensor,
    labels: Tensor,
    mask_logits: Tensor,
    thing_ids: Sequence[int],
    overlap_threshold: float,
) -> tuple[Tensor, list[dict]]:
    """Merge the kept queries' masks into a panoptic map, without per-query tensor work.

    Each pixel goes to the kept query with the highest score x mask probability and keeps its
    segment id when that query's probability there is >= 0.5; the per-query areas come from
    scatter-adds and reach the host in one transfer, and the map is one table look-up.

    Args:
        scores, labels: `[K]` of the kept queries (`panoptic_keep`).
        mask_logits: `[K, H, W]` their mask logits at the output size.
        thing_ids: contiguous ids of the thing classes.
        overlap_threshold: minimum won / own area of a segment.

    Returns:
        `(panoptic_seg int32 [H, W], segments_info)` as `panoptic_inference`.
    """
    num_kept = scores.shape[0]
    h, w = mask_logits.shape[-2:]
    if num_kept == 0:
        return torch.zeros((h, w), dtype=torch.int32, device=mask_logits.device), []
    mask_probs = mask_logits.sigmoid()
    # `max(0).indices` is `argmax(0)` (first index on ties), and several times faster on CPU.
    winner = (scores.view(-1, 1, 1) * mask_probs).max(0).indices
    own_area = (mask_probs >= 0.5).flatten(1).sum(1, dtype=torch.int32).to(torch.int64)
    in_own_mask = mask_probs.gather(0, winner[None])[0] >= 0.5
    # Pixels outside their winner's own mask go to the extra bin `num_kept` (void).
    region = torch.where(in_own_mask, winner, num_kept)
    won_area = _count(winner, num_kept)
    region_area = _count(region, num_kept + 1)[:num_kept]
    host = torch.stack([labels.to(torch.int64), won_area, own_area, region_area]).tolist()
    ids, segments_info = assign_segment_ids(*host, thing_ids, overlap_threshold)
    id_table = torch.tensor(ids + [0], dtype=torch.int32, device=mask_logits.device)
    return id_table[region], segments_info


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
    the first segment id of the same class. The model calls `panoptic_keep` and
    `panoptic_merge` itself so that only the kept queries' masks are resized.

    Args:
        mask_cls: `[Q, C]` class logits.
        mask_logits: `[Q, H, W]` mask logits at the output size.

    Returns:
        `(panoptic_seg int32 [H, W], segments_info)`, 0 = void; segments_info entries are
        `{"id", "isthing", "category_id"}` with contiguous category ids.
    """
    queries, scores, labels = panoptic_keep(
        mask_cls, object_mask_threshold, transform_eval, temperature
    )
    return panoptic_merge(scores, labels, mask_logits[queries], thing_ids, overlap_threshold)
