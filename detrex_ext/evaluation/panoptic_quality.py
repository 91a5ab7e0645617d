"""Panoptic quality (PQ, SQ, RQ), computed as panopticapi's ``pq_compute`` does.

Per image: a predicted and a ground-truth segment match when they have the same category and
IoU > 0.5, where the IoU's union leaves out the prediction's pixels on void. Crowd
ground-truth segments never match and are not false negatives. An unmatched prediction is a
false positive unless more than half of it lies on void or on a crowd region of its
category. Per category: PQ = sum(IoU of matches) / (TP + FP/2 + FN/2), SQ = sum(IoU) / TP,
RQ = TP / (TP + FP/2 + FN/2); averages run over the categories with TP + FP + FN > 0.

Segment ids: 0 is void. Category ids are those of the dataset (not contiguous).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

__all__ = ["PQStat", "PQStatCat", "pq_compute_single_image"]

VOID = 0
OFFSET = 256 * 256 * 256  # segment ids are below 256^3 (they are RGB-encoded in PNGs)


@dataclass
class PQStatCat:
    """Accumulated matches of one category."""

    iou: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __iadd__(self, other: PQStatCat) -> PQStatCat:
        self.iou += other.iou
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        return self


class PQStat:
    """Per-category statistics, summable over images and processes."""

    def __init__(self) -> None:
        self.pq_per_cat: defaultdict[int, PQStatCat] = defaultdict(PQStatCat)

    def __getitem__(self, category_id: int) -> PQStatCat:
        return self.pq_per_cat[category_id]

    def __iadd__(self, other: PQStat) -> PQStat:
        for category_id, stat in other.pq_per_cat.items():
            self.pq_per_cat[category_id] += stat
        return self

    def pq_average(
        self, categories: Mapping[int, Mapping[str, Any]], isthing: bool | None
    ) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
        """Average PQ/SQ/RQ over ``categories`` (``{id: {"isthing": 0|1}}``), restricted to
        things (``isthing=True``), stuff (False) or none (None).

        Returns:
            ``({"pq", "sq", "rq", "n"}, {category_id: {"pq", "sq", "rq"}})`` as fractions; the
            averages are NaN when no category of the group occurs (panopticapi divides by zero).
        """
        pq = sq = rq = 0.0
        n = 0
        per_class: dict[int, dict[str, float]] = {}
        for category_id, info in categories.items():
            if isthing is not None and bool(info.get("isthing", 0)) != isthing:
                continue
            stat = self.pq_per_cat.get(category_id, PQStatCat())
            denominator = stat.tp + 0.5 * stat.fp + 0.5 * stat.fn
            if stat.tp + stat.fp + stat.fn == 0:
                per_class[category_id] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            n += 1
            pq_class = stat.iou / denominator
            sq_class = stat.iou / stat.tp if stat.tp != 0 else 0.0
            rq_class = stat.tp / denominator
            per_class[category_id] = {"pq": pq_class, "sq": sq_class, "rq": rq_class}
            pq, sq, rq = pq + pq_class, sq + sq_class, rq + rq_class
        if n == 0:
            return {"pq": float("nan"), "sq": float("nan"), "rq": float("nan"), "n": 0}, per_class
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class


def pq_compute_single_image(
    gt_ids: np.ndarray,
    gt_segments: Iterable[Mapping[str, Any]],
    pred_ids: np.ndarray,
    pred_segments: Iterable[Mapping[str, Any]],
    categories: Mapping[int, Any],
) -> PQStat:
    """PQ statistics of one image.

    Args:
        gt_ids, pred_ids: ``[H, W]`` integer segment-id maps (0 = void), same size.
        gt_segments: ``{id, category_id, iscrowd, area?}`` per ground-truth segment (``area``
            from the annotation is used when given, as panopticapi does).
        pred_segments: ``{id, category_id}`` per predicted segment.
        categories: the known category ids (keys).

    Raises:
        ValueError: a predicted id is in the map but not in ``pred_segments`` or the reverse,
            or a predicted category is unknown.
    """
    gt_ids = np.asarray(gt_ids, dtype=np.int64)
    pred_ids = np.asarray(pred_ids, dtype=np.int64)
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(
            f"panoptic prediction has size {pred_ids.shape}, ground truth {gt_ids.shape}"
        )
    gt_segms = {int(s["id"]): dict(s) for s in gt_segments}
    pred_segms = {int(s["id"]): dict(s) for s in pred_segments}

    # areas of predicted segments, with panopticapi's sanity checks
    labels, counts = np.unique(pred_ids, return_counts=True)
    unlisted = set(pred_segms)
    for label, count in zip(labels.tolist(), counts.tolist()):
        if label == VOID:
            continue
        if label not in pred_segms:
            raise ValueError(
                f"segment id {label} is in the predicted panoptic map but not in its segments_info"
            )
        pred_segms[label]["area"] = count
        unlisted.discard(label)
        if pred_segms[label]["category_id"] not in categories:
            raise ValueError(
                f"predicted segment {label} has unknown category_id {pred_segms[label]['category_id']}"
            )
    if unlisted:
        raise ValueError(
            f"segments {sorted(unlisted)} are in segments_info but not in the predicted panoptic map"
        )
    if any("area" not in s for s in gt_segms.values()):
        gt_labels, gt_counts = np.unique(gt_ids, return_counts=True)
        gt_area = dict(zip(gt_labels.tolist(), gt_counts.tolist()))
        for label, segment in gt_segms.items():
            segment.setdefault("area", gt_area.get(label, 0))

    # pixel counts of every (gt id, pred id) pair
    pairs, intersections = np.unique(gt_ids * OFFSET + pred_ids, return_counts=True)
    gt_pred_map = {
        (int(p // OFFSET), int(p % OFFSET)): int(c)
        for p, c in zip(pairs.tolist(), intersections.tolist())
    }

    stat = PQStat()
    gt_matched, pred_matched = set(), set()
    for (gt_label, pred_label), intersection in gt_pred_map.items():
        gt, pred = gt_segms.get(gt_label), pred_segms.get(pred_label)
        if gt is None or pred is None or gt.get("iscrowd", 0) == 1:
            continue
        if gt["category_id"] != pred["category_id"]:
            continue
        union = pred["area"] + gt["area"] - intersection - gt_pred_map.get((VOID, pred_label), 0)
        iou = intersection / union
        if iou > 0.5:
            stat[gt["category_id"]].tp += 1
            stat[gt["category_id"]].iou += iou
            gt_matched.add(gt_label)
            pred_matched.add(pred_label)

    crowd_by_category = {}
    for gt_label, gt in gt_segms.items():
        if gt_label in gt_matched:
            continue
        if gt.get("iscrowd", 0) == 1:
            crowd_by_category[gt["category_id"]] = gt_label
            continue
        stat[gt["category_id"]].fn += 1

    for pred_label, pred in pred_segms.items():
        if pred_label in pred_matched:
            continue
        ignored = gt_pred_map.get((VOID, pred_label), 0)
        if pred["category_id"] in crowd_by_category:
            ignored += gt_pred_map.get((crowd_by_category[pred["category_id"]], pred_label), 0)
        if ignored / pred["area"] > 0.5:
            continue
        stat[pred["category_id"]].fp += 1
    return stat
