"""COCOEvaluator: perfect predictions, a hand-computed case, and agreement with pycocotools."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detrex_ext.data import (
    DatasetCatalog,
    MetadataCatalog,
    register_coco_root,
    register_synthetic_shapes,
)
from detrex_ext.data.catalog import register_dataset
from detrex_ext.data.datasets import convert_to_coco_dict
from detrex_ext.evaluation import COCOEvaluator, instances_to_coco_json
from detrex_ext.structures import BitMasks, Boxes, BoxMode, Instances


def _evaluate(name, predictions, **kwargs):
    evaluator = COCOEvaluator(name, **kwargs)
    evaluator.reset()
    for image_id, instances in predictions:
        evaluator.process([{"image_id": image_id}], [{"instances": instances}])
    return evaluator.evaluate()


def _boxes_dataset(name, gt_boxes):
    records = [
        {
            "file_name": "none",
            "image_id": 1,
            "height": 100,
            "width": 100,
            "annotations": [
                {"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 0}
                for b in gt_boxes
            ],
        }
    ]
    register_dataset(name, lambda: records, {"thing_classes": ["thing"]})


def _prediction(boxes, scores, classes=None):
    inst = Instances((100, 100))
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.scores = torch.tensor(scores)
    inst.pred_classes = torch.tensor(classes or [0] * len(boxes))
    return inst


def test_hand_computed_box_ap():
    # GT A and B (40x40 each). A is found exactly (score 0.9); B' is B shifted by 9 px
    # (score 0.8): intersection 31 x 40 = 1240, union 3200 - 1240 = 1960
    _boxes_dataset("hand_boxes", [[0, 0, 40, 40], [50, 50, 90, 90]])
    iou = 1240 / 1960  # 0.6327: a match at IoU thresholds 0.50, 0.55, 0.60 only
    preds = [(1, _prediction([[0, 0, 40, 40], [59, 50, 99, 90]], [0.9, 0.8]))]
    results = _evaluate("hand_boxes", preds)["bbox"]
    # with B' unmatched, recall stops at 0.5 with precision 1: 51 of the 101 recall points
    expected_ap = (3 * 1.0 + 7 * 51 / 101) / 10
    assert 0.6 < iou < 0.65
    assert results["AP"] == pytest.approx(100 * expected_ap)
    assert results["AP50"] == pytest.approx(100.0)
    assert results["AP75"] == pytest.approx(100 * 51 / 101)
    assert results["AP-thing"] == pytest.approx(results["AP"])
    assert np.isnan(results["APs"])  # no small objects in the ground truth


def test_wrong_class_count_gives_a_clear_error():
    _boxes_dataset("hand_boxes_err", [[0, 0, 40, 40]])
    with pytest.raises(
        ValueError, match="class=3, but dataset 'hand_boxes_err' has 1 thing_classes"
    ):
        _evaluate("hand_boxes_err", [(1, _prediction([[0, 0, 40, 40]], [0.9], [3]))])


def test_synthetic_perfect_and_perturbed_predictions_match_pycocotools(oracle):
    register_synthetic_shapes("coco_eval_syn", num_images=8, image_size=96, seed=7)
    records = DatasetCatalog.get("coco_eval_syn")
    perfect = [(r["image_id"], oracle.instances(r)) for r in records]
    results = _evaluate("coco_eval_syn", perfect)
    for task in ("bbox", "segm"):
        for metric in ("AP", "AP50", "AP75", "AP-circle", "AP-square", "AP-triangle"):
            assert results[task][metric] == pytest.approx(100.0)

    rng = np.random.default_rng(0)
    perturbed = []
    for image_id, inst in perfect:
        inst = inst[torch.arange(len(inst)) % 4 != 3]  # drop some objects (misses)
        inst.pred_boxes.tensor += torch.from_numpy(
            rng.normal(0, 3, inst.pred_boxes.tensor.shape)
        ).float()
        inst.pred_masks = torch.roll(inst.pred_masks, shifts=int(rng.integers(-3, 4)), dims=2)
        inst.scores = torch.from_numpy(rng.uniform(0.1, 1.0, len(inst))).float()
        perturbed.append((image_id, inst))
    results = _evaluate("coco_eval_syn", perturbed)

    # the same predictions scored by pycocotools directly
    metadata = MetadataCatalog.get("coco_eval_syn")
    coco_gt = COCO()
    coco_gt.dataset = convert_to_coco_dict(records, metadata)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        detections = [
            d for image_id, inst in perturbed for d in instances_to_coco_json(inst, image_id)
        ]
        for d in detections:
            d["category_id"] += 1  # contiguous -> dataset ids 1..3
        for task in ("bbox", "segm"):
            dets = [
                {k: v for k, v in d.items() if not (task == "segm" and k == "bbox")}
                for d in detections
            ]
            coco_eval = COCOeval(coco_gt, coco_gt.loadRes(dets), task)
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
            for index, metric in enumerate(["AP", "AP50", "AP75", "APs", "APm", "APl"]):
                reference = coco_eval.stats[index]
                if reference < 0:
                    assert np.isnan(results[task][metric])
                else:
                    assert results[task][metric] == pytest.approx(100 * reference)
    assert 20 < results["bbox"]["AP"] < 95 and 20 < results["segm"]["AP"] < 95


def test_coco_mini_ground_truth_scores_100(coco_mini_root, oracle, tmp_path):
    register_coco_root(coco_mini_root, prefix="mini_eval")
    records = DatasetCatalog.get("mini_eval_val")
    predictions = [(r["image_id"], oracle.instances(r)) for r in records]
    results = _evaluate("mini_eval_val", predictions, output_dir=str(tmp_path))
    for task in ("bbox", "segm"):
        assert results[task]["AP"] == pytest.approx(100.0)
        assert results[task]["APs"] == pytest.approx(100.0)
        assert results[task]["AP-person"] == pytest.approx(100.0)
        assert np.isnan(results[task]["AP-toaster"])  # no toaster in val2017 of coco_mini
    assert (tmp_path / "coco_instances_results.json").is_file()


def test_no_instances_gives_nan_and_empty_inputs_give_empty_results():
    _boxes_dataset("hand_boxes_nan", [[0, 0, 40, 40]])
    results = _evaluate("hand_boxes_nan", [(1, _prediction(torch.zeros(0, 4).tolist(), []))])
    assert all(np.isnan(v) for k, v in results["bbox"].items())
    assert _evaluate("hand_boxes_nan", []) == {}


def test_panoptic_dataset_without_instance_json_uses_its_thing_segments(oracle):
    register_synthetic_shapes("coco_eval_pan_src", num_images=4, image_size=80, seed=2)
    records = [
        {k: v for k, v in r.items() if k != "annotations"}
        for r in DatasetCatalog.get("coco_eval_pan_src")
    ]
    metadata = MetadataCatalog.get("coco_eval_pan_src").as_dict()
    metadata.pop("name")
    register_dataset("coco_eval_pan", lambda: records, metadata)
    coco = convert_to_coco_dict(records, MetadataCatalog.get("coco_eval_pan"))
    assert len(coco["annotations"]) == sum(
        s["isthing"] for r in records for s in r["segments_info"]
    )

    predictions = []
    for record in records:
        ids, segments = oracle.panoptic(record)
        things = [s for s in segments if s["isthing"]]
        inst = Instances(tuple(ids.shape))
        inst.pred_masks = torch.stack([ids == s["id"] for s in things])
        inst.pred_boxes = BitMasks(inst.pred_masks).get_bounding_boxes()
        inst.scores = torch.ones(len(things))
        inst.pred_classes = torch.tensor([s["category_id"] for s in things])
        predictions.append((record["image_id"], inst))
    results = _evaluate("coco_eval_pan", predictions)
    assert results["bbox"]["AP"] == pytest.approx(100.0) and results["segm"]["AP"] == pytest.approx(
        100.0
    )
