"""SemSegEvaluator: metrics by hand, perfect predictions on synthetic and ADE20K data, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from detrex_ext.data import DatasetCatalog, register_ade20k_semantic, register_synthetic_shapes
from detrex_ext.data.catalog import register_dataset
from detrex_ext.evaluation import SemSegEvaluator


class _Label:
    """A record's in-memory semantic label."""

    def __init__(self, label):
        self.label = np.asarray(label, dtype=np.uint8)

    def sem_seg(self):
        return self.label


def _scores(pred, num_classes):
    return torch.nn.functional.one_hot(torch.tensor(pred), num_classes).permute(2, 0, 1).float()


def test_metrics_by_hand():
    gt = [[0, 0, 0, 0, 1, 1, 255]]
    pred = [[0, 0, 0, 1, 1, 1, 0]]
    records = [{"file_name": "a", "image_id": 0, "height": 1, "width": 7, "scene": _Label(gt)}]
    register_dataset(
        "sem_hand", lambda: records, {"stuff_classes": ["x", "y", "z"], "ignore_label": 255}
    )
    evaluator = SemSegEvaluator("sem_hand")
    evaluator.reset()
    evaluator.process([{"file_name": "a"}], [{"sem_seg": _scores(pred, 3)}])
    r = evaluator.evaluate()["sem_seg"]
    # class x: TP 3, GT 4, predicted 3 (the pixel on "ignore" is left out) -> IoU 3/4
    # class y: TP 2, GT 2, predicted 3 -> IoU 2/3; class z: absent everywhere -> NaN, not averaged
    assert r["IoU-x"] == pytest.approx(75.0) and r["IoU-y"] == pytest.approx(200 / 3)
    assert math.isnan(r["IoU-z"]) and math.isnan(r["ACC-z"])
    assert r["mIoU"] == pytest.approx((75.0 + 200 / 3) / 2)
    assert r["fwIoU"] == pytest.approx(100 * (4 / 6 * 0.75 + 2 / 6 * 2 / 3))
    assert r["mACC"] == pytest.approx(100 * (3 / 4 + 1) / 2)
    assert r["pACC"] == pytest.approx(100 * 5 / 6)

    with pytest.raises(ValueError, match="4 channels but dataset 'sem_hand' has 3 classes"):
        evaluator.process([{"file_name": "a"}], [{"sem_seg": _scores(pred, 4)}])
    with pytest.raises(ValueError, match="original image size"):
        evaluator.process([{"file_name": "a"}], [{"sem_seg": torch.zeros(3, 2, 7)}])


def test_perfect_predictions_on_synthetic_data(oracle):
    register_synthetic_shapes("sem_syn", num_images=4, image_size=64, seed=9)
    evaluator = SemSegEvaluator("sem_syn")
    evaluator.reset()
    for record in DatasetCatalog.get("sem_syn"):
        evaluator.process(
            [{"file_name": record["file_name"]}], [{"sem_seg": oracle.sem_seg(record, 5)}]
        )
    results = evaluator.evaluate()["sem_seg"]
    for key in ("mIoU", "fwIoU", "mACC", "pACC", "IoU-circle", "IoU-sky", "ACC-ground"):
        assert results[key] == pytest.approx(100.0)


def test_ade20k_sample_ground_truth_gives_100(ade20k_sample_root, oracle):
    base = ade20k_sample_root / "ADEChallengeData2016"
    register_ade20k_semantic(
        "ade_eval", base / "images" / "validation", base / "annotations_detectron2" / "validation"
    )
    evaluator = SemSegEvaluator("ade_eval")
    evaluator.reset()
    for record in DatasetCatalog.get("ade_eval"):
        evaluator.process(
            [{"file_name": record["file_name"]}], [{"sem_seg": oracle.sem_seg(record, 150)}]
        )
    results = evaluator.evaluate()["sem_seg"]
    assert results["mIoU"] == pytest.approx(100.0) and results["pACC"] == pytest.approx(100.0)
    assert results["IoU-wall"] == pytest.approx(100.0) and math.isnan(results["IoU-bed"])
