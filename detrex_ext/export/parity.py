"""Comparisons of exported outputs with their eager reference (numpy and scipy only).

Matching is order-independent where the order is not meaningful: near-tied encoder tokens may
be selected in either order (the decoder is permutation-equivariant, so the rows just swap), and
instances are a set. Boxes are compared normalised by the image size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = [
    "InstanceParity",
    "compare_instances",
    "label_agreement",
    "matched_rows_max_diff",
    "segment_agreement",
]


def matched_rows_max_diff(
    reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]
) -> tuple[list[float], bool]:
    """Max abs difference of row-aligned arrays after matching rows one-to-one.

    Args:
        reference, candidate: arrays ``[N, *]`` each (e.g. logits ``[Q, C]`` and boxes
            ``[Q, 4]``); row i of every reference array belongs to the same query.

    Returns:
        the max abs difference per array over matched rows, and whether the matching is the
        identity (rows in the same order).
    """
    ref = np.concatenate([np.asarray(a, np.float64).reshape(len(a), -1) for a in reference], 1)
    cand = np.concatenate([np.asarray(a, np.float64).reshape(len(a), -1) for a in candidate], 1)
    identity = np.arange(len(ref))
    if np.abs(ref - cand).max(initial=0.0) == 0.0:
        order = identity
    else:
        cost = np.abs(ref[:, None, :] - cand[None, :, :]).max(-1)
        rows, order = linear_sum_assignment(cost)
        order = order[np.argsort(rows)]
    diffs = [
        float(np.abs(np.asarray(r, np.float64) - np.asarray(c, np.float64)[order]).max(initial=0))
        for r, c in zip(reference, candidate)
    ]
    return diffs, bool((order == identity).all())


_CLOSE = 0.01  # box (normalised) and score differences under which masks decide the matching


@dataclass
class InstanceParity:
    """Instance sets compared after one-to-one matching (same class required)."""

    num_reference: int
    num_candidate: int
    unmatched: int = 0
    max_box_diff: float = 0.0  # normalised by the image width / height
    max_score_diff: float = 0.0
    min_mask_iou: float = 1.0
    pairs: list[tuple[int, int]] = field(default_factory=list)


def _mask_iou(a: np.ndarray, b: np.ndarray, undecided: np.ndarray | None = None) -> float:
    """IoU of two bool masks over the pixels not ``undecided``."""
    if undecided is not None:
        a, b = a & ~undecided, b & ~undecided
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _at(masks: np.ndarray | None, index: int) -> np.ndarray | None:
    return None if masks is None else masks[index]


def compare_instances(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    image_size: Sequence[int],
    mask_threshold: float = 0.5,
    mask_tie: float = 0.0,
) -> InstanceParity:
    """Match two instance sets and measure the matched pairs.

    Args:
        reference, candidate: ``instance_scores [N]``, ``instance_classes [N]``,
            ``instance_boxes [N, 4]`` (xyxy pixels), ``instance_masks [N, H, W]`` (bool, or
            floats thresholded: ``> mask_threshold``) and optionally ``instance_valid [N]``.
        image_size: ``(H, W)`` for normalising the boxes.
        mask_threshold: for float masks (0.5 for probabilities, 0 for logits).
        mask_tie: the candidate's float mask pixels within this of ``mask_threshold`` are
            near-tie decisions (float32 noise can flip them, and the eager model's own rounding
            differs with the memory layout): the mask IoU leaves them out.

    Returns:
        an :class:`InstanceParity`; pairs are matched by class, then by the smallest normalised
        box plus score difference, and among pairs within 0.01 of each other also by mask IoU.
    """
    sets = []
    undecided = None
    for outputs in (reference, candidate):
        valid = np.asarray(outputs.get("instance_valid", np.ones(len(outputs["instance_scores"]))))
        valid = valid.astype(bool)
        masks = np.asarray(outputs["instance_masks"])[valid]
        sets.append(
            {
                "scores": np.asarray(outputs["instance_scores"], np.float64)[valid],
                "classes": np.asarray(outputs["instance_classes"]).astype(np.int64)[valid],
                "boxes": np.asarray(outputs["instance_boxes"], np.float64)[valid],
                "masks": masks if masks.dtype == np.bool_ else masks > mask_threshold,
            }
        )
        if outputs is candidate and masks.dtype != np.bool_ and mask_tie > 0:
            undecided = np.abs(masks - mask_threshold) <= mask_tie
    ref, cand = sets
    parity = InstanceParity(len(ref["scores"]), len(cand["scores"]))
    if parity.num_reference == 0 or parity.num_candidate == 0:
        parity.unmatched = max(parity.num_reference, parity.num_candidate)
        return parity
    scale = np.array([image_size[1], image_size[0]] * 2, dtype=np.float64)
    box_diff = np.abs(ref["boxes"][:, None] / scale - cand["boxes"][None] / scale).max(-1)
    score_diff = np.abs(ref["scores"][:, None] - cand["scores"][None])
    same_class = ref["classes"][:, None] == cand["classes"][None]
    # Near-duplicate instances (same class, almost the same box and score: common with random
    # weights) are told apart by their masks; only such close pairs get a mask IoU.
    close = same_class & (box_diff < _CLOSE) & (score_diff < _CLOSE)
    mask_cost = np.ones_like(box_diff)
    for i, j in zip(*np.nonzero(close)):
        mask_cost[i, j] = 1.0 - _mask_iou(ref["masks"][i], cand["masks"][j], _at(undecided, j))
    cost = np.where(close, mask_cost, 10.0) + box_diff + score_diff
    cost = np.where(same_class, cost, 1e6)
    rows, cols = linear_sum_assignment(cost)
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols) if same_class[r, c]]
    parity.pairs = pairs
    parity.unmatched = max(parity.num_reference, parity.num_candidate) - len(pairs)
    if pairs:
        r, c = np.array(pairs).T
        parity.max_box_diff = float(box_diff[r, c].max())
        parity.max_score_diff = float(score_diff[r, c].max())
        parity.min_mask_iou = min(
            _mask_iou(ref["masks"][i], cand["masks"][j], _at(undecided, j)) for i, j in pairs
        )
    return parity


def label_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Fraction of pixels with the same label (semantic maps)."""
    return float((np.asarray(reference) == np.asarray(candidate)).mean())


def segment_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Fraction of pixels assigned to corresponding segments of two segment-id maps.

    Segments correspond one-to-one by largest overlap (id 0, void, only to void), so the same
    partition numbered differently agrees fully.
    """
    ref, cand = np.asarray(reference).ravel(), np.asarray(candidate).ravel()
    ref_ids, ref_index = np.unique(ref, return_inverse=True)
    cand_ids, cand_index = np.unique(cand, return_inverse=True)
    overlap = np.zeros((len(ref_ids), len(cand_ids)), dtype=np.int64)
    np.add.at(overlap, (ref_index, cand_index), 1)
    weights = np.where((ref_ids[:, None] == 0) != (cand_ids[None] == 0), -1, overlap)
    rows, cols = linear_sum_assignment(-weights)
    agreed = sum(int(overlap[r, c]) for r, c in zip(rows, cols) if weights[r, c] > 0)
    return agreed / max(len(ref), 1)
