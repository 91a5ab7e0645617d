"""PQ: hand-computed cases (void, crowd, thresholds) and COCOPanopticEvaluator end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from detrex_ext.data import DatasetCatalog, register_coco_root, register_synthetic_shapes
from detrex_ext.evaluation import COCOPanopticEvaluator, PQStat, pq_compute_single_image

THING, STUFF, OTHER = 10, 20, 30
CATEGORIES = {THING: {"isthing": 1}, STUFF: {"isthing": 0}, OTHER: {"isthing": 1}}


def _stat(gt, gt_segments, pred, pred_segments) -> PQStat:
    return pq_compute_single_image(
        np.array([gt]), gt_segments, np.array([pred]), pred_segments, CATEGORIES
    )


def _seg(segment_id, category, iscrowd=0):
    return {"id": segment_id, "category_id": category, "iscrowd": iscrowd}


def test_matching_with_void_by_hand():
    gt = [1, 1, 1, 1, 2, 2, 2, 2, 0, 0]
    pred = [1, 1, 1, 5, 5, 5, 5, 5, 5, 0]
    stat = _stat(gt, [_seg(1, THING), _seg(2, STUFF)], pred, [_seg(1, THING), _seg(5, STUFF)])
    # thing: intersection 3, union 3 + 4 - 3 = 4 -> IoU 0.75
    # stuff: intersection 4, union 6 + 4 - 4 - 1 (the prediction's pixel on void) = 5 -> 0.8
    assert (stat[THING].tp, stat[THING].iou) == (1, pytest.approx(0.75))
    assert (stat[STUFF].tp, stat[STUFF].iou) == (1, pytest.approx(0.8))
    averages, per_class = stat.pq_average(CATEGORIES, None)
    assert averages["pq"] == pytest.approx(0.775) and averages["rq"] == 1.0 and averages["n"] == 2
    assert per_class[OTHER] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}  # absent: not averaged
    things, _ = stat.pq_average(CATEGORIES, True)
    assert things["pq"] == pytest.approx(0.75) and things["n"] == 1


def test_iou_of_exactly_half_is_not_a_match():
    gt = [1, 1, 1, 1, 3, 3, 3, 3]
    pred = [7, 7, 0, 0, 3, 3, 3, 3]
    stat = _stat(gt, [_seg(1, THING), _seg(3, STUFF)], pred, [_seg(7, THING), _seg(3, STUFF)])
    assert (stat[THING].tp, stat[THING].fp, stat[THING].fn) == (0, 1, 1)  # IoU 2 / 4 = 0.5
    averages, _ = stat.pq_average(CATEGORIES, None)
    # thing: 0 / (0 + 0.5 + 0.5) = 0; stuff: 1
    assert averages["pq"] == pytest.approx(0.5) and averages["sq"] == pytest.approx(0.5)


def test_crowd_regions_and_void_are_not_false_positives():
    gt = [9, 9, 9, 9, 9, 9, 3, 3, 3, 3]
    pred = [4, 4, 4, 4, 5, 5, 6, 6, 6, 6]
    gt_segments = [_seg(9, THING, iscrowd=1), _seg(3, STUFF)]
    pred_segments = [_seg(4, THING), _seg(5, OTHER), _seg(6, STUFF)]
    stat = _stat(gt, gt_segments, pred, pred_segments)
    assert (stat[THING].tp, stat[THING].fp, stat[THING].fn) == (0, 0, 0)  # on its crowd: ignored
    assert (stat[OTHER].tp, stat[OTHER].fp) == (0, 1)  # on another category's crowd: counted
    assert stat[STUFF].tp == 1
    averages, _ = stat.pq_average(CATEGORIES, None)
    assert averages["n"] == 2 and averages["pq"] == pytest.approx(0.5)

    mostly_void = _stat([0, 0, 0, 1], [_seg(1, THING)], [8, 8, 8, 8], [_seg(8, OTHER)])
    assert mostly_void[OTHER].fp == 0 and mostly_void[THING].fn == 1
    half_void = _stat([0, 0, 1, 1], [_seg(1, THING)], [8, 8, 8, 8], [_seg(8, OTHER)])
    assert half_void[OTHER].fp == 1  # exactly half on void still counts


def test_inconsistent_predictions_are_reported():
    with pytest.raises(ValueError, match="not in its segments_info"):
        _stat([1, 1], [_seg(1, THING)], [1, 2], [_seg(1, THING)])
    with pytest.raises(ValueError, match="not in the predicted panoptic map"):
        _stat([1, 1], [_seg(1, THING)], [1, 1], [_seg(1, THING), _seg(2, STUFF)])
    with pytest.raises(ValueError, match="unknown category_id"):
        _stat([1, 1], [_seg(1, THING)], [1, 1], [_seg(1, 99)])


def _run(name, outputs, **kwargs):
    evaluator = COCOPanopticEvaluator(name, **kwargs)
    evaluator.reset()
    for image_id, panoptic in outputs:
        evaluator.process([{"image_id": image_id}], [{"panoptic_seg": panoptic}])
    return evaluator.evaluate()["panoptic_seg"]


def test_synthetic_perfect_missing_and_label_divisor_predictions(oracle, tmp_path):
    register_synthetic_shapes("pan_eval_syn", num_images=6, image_size=80, seed=3)
    records = DatasetCatalog.get("pan_eval_syn")
    results = _run(
        "pan_eval_syn",
        [(r["image_id"], oracle.panoptic(r)) for r in records],
        output_dir=str(tmp_path),
    )
    assert all(v == pytest.approx(100.0) for v in results.values())
    assert len(list((tmp_path / "panoptic_predictions").glob("*.png"))) == 6
    assert len(json.loads((tmp_path / "panoptic_predictions.json").read_text())["annotations"]) == 6

    # drop every first thing of each image: it becomes void (a miss) and its class gets an FN
    outputs, tp, fn = [], np.zeros(5), np.zeros(5)
    for record in records:
        ids, segments = oracle.panoptic(record)
        dropped = next(s for s in segments if s["isthing"])
        ids = ids.clone()
        ids[ids == dropped["id"]] = 0
        outputs.append((record["image_id"], (ids, [s for s in segments if s is not dropped])))
        for s in segments:
            (fn if s is dropped else tp)[s["category_id"]] += 1
    present = (tp + fn) > 0
    pq = tp[present] / (tp[present] + 0.5 * fn[present])  # matched segments have IoU 1
    results = _run("pan_eval_syn", outputs)
    assert results["PQ"] == pytest.approx(100 * pq.mean())
    assert (
        results["PQ_th"] == pytest.approx(100 * pq[:3][present[:3]].mean())
        and results["PQ_th"] < 100
    )
    assert results["PQ_st"] == pytest.approx(100.0) and results["SQ"] == pytest.approx(100.0)

    # the (labels, None) format: class * label_divisor + instance, -1 = void
    encoded = []
    for record in records:
        ids, segments = oracle.panoptic(record)
        labels = torch.full_like(ids, -1)
        for k, s in enumerate(segments):
            labels[ids == s["id"]] = s["category_id"] * 1000 + k
        encoded.append((record["image_id"], (labels, None)))
    assert _run("pan_eval_syn", encoded)["PQ"] == pytest.approx(100.0)


def test_coco_mini_ground_truth_scores_pq_100(coco_mini_root, oracle):
    register_coco_root(coco_mini_root, prefix="mini_pan")
    records = DatasetCatalog.get("mini_pan_val_panoptic")
    results = _run("mini_pan_val_panoptic", [(r["image_id"], oracle.panoptic(r)) for r in records])
    assert results == pytest.approx({k: 100.0 for k in results})
    assert set(results) == {"PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"}


def test_wrong_class_is_reported_with_its_origin():
    register_synthetic_shapes("pan_eval_err", num_images=1, image_size=64, seed=0)
    (record,) = DatasetCatalog.get("pan_eval_err")
    ids = torch.ones(64, 64, dtype=torch.int64)
    with pytest.raises(ValueError, match="thing class=7.*num_classes"):
        _run(
            "pan_eval_err",
            [(record["image_id"], (ids, [{"id": 1, "category_id": 7, "isthing": True}]))],
        )
