"""The shared data configs load, and their loaders and evaluators build and run."""

from __future__ import annotations

import pytest

from detrex_ext.config import LazyConfig, get_config, instantiate
from detrex_ext.data import register_coco_root
from detrex_ext.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)


def test_synthetic_shapes_config_builds_loaders_and_evaluators():
    cfg = get_config("common/data/synthetic_shapes.py")
    evaluator = instantiate(cfg.dataloader.evaluator)
    assert isinstance(evaluator, DatasetEvaluators)
    kinds = [type(e) for e in evaluator._evaluators]
    assert kinds == [COCOPanopticEvaluator, COCOEvaluator, SemSegEvaluator]
    assert len(instantiate(cfg.dataloader.test)) == 64
    batch = next(iter(instantiate(cfg.dataloader.train)))
    assert len(batch) == 8 and batch[0]["image"].shape == (3, 128, 128)
    assert int(batch[0]["instances"].gt_classes.max()) < 5
    assert cfg.dataloader.test.mapper.image_format == "RGB"


def test_coco_config_points_at_the_builtin_names_and_can_be_retargeted(coco_mini_root):
    cfg = get_config("common/data/coco.py")
    assert cfg.dataloader.train.dataset.names == "coco_2017_train"
    assert cfg.dataloader.evaluator.dataset_name == "coco_2017_val"
    register_coco_root(coco_mini_root, prefix="cfg_mini")
    cfg = LazyConfig.apply_overrides(
        cfg,
        ["dataloader.test.dataset.names=cfg_mini_val", "dataloader.test.num_workers=0"],
    )
    loader = instantiate(cfg.dataloader.test)
    assert len(loader) == 100
    (item,) = next(iter(loader))
    assert max(item["image"].shape[1:]) <= 1333 and min(item["image"].shape[1:]) == 800
    assert instantiate(cfg.dataloader.evaluator)._dataset_name == "cfg_mini_val"


def test_constants():
    constants = get_config("common/data/constants.py").constants
    assert constants.imagenet_rgb256_mean == pytest.approx([123.675, 116.28, 103.53])
    assert constants.imagenet_bgr256_mean == pytest.approx(constants.imagenet_rgb256_mean[::-1])
