"""Mappers: masks, boxes and pixels stay aligned through every augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detrex_ext.data import (
    COCOInstanceLSJDatasetMapper,
    COCOPanopticLSJDatasetMapper,
    DatasetCatalog,
    DatasetMapper,
    MaskFormerSemanticDatasetMapper,
    register_ade20k_semantic,
    register_coco_root,
    register_synthetic_shapes,
)
from detrex_ext.data import transforms as T
from detrex_ext.structures import BitMasks

# dominant colour channel of each synthetic class: circle red, square green, triangle blue,
# sky and ground are light blue and brown
DOMINANT_CHANNEL = {0: 0, 1: 1, 2: 2}


@pytest.fixture
def synthetic_records():
    register_synthetic_shapes("mapper_syn", num_images=16, image_size=96, seed=4)
    return DatasetCatalog.get("mapper_syn")


def _check_aligned(image: torch.Tensor, masks: torch.Tensor, classes: torch.Tensor) -> int:
    """Pixels under each mask have the colour of its class; returns #masks checked."""
    checked = 0
    for mask, cls in zip(masks, classes.tolist()):
        if cls not in DOMINANT_CHANNEL or mask.sum() < 20:
            continue
        # erode by one pixel: resized edges blend with the background
        inner = mask.clone()
        inner[1:] &= mask[:-1]
        inner[:-1] &= mask[1:]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        if inner.sum() < 5:
            continue
        color = image[:, inner].float().mean(dim=1)
        assert int(color.argmax()) == DOMINANT_CHANNEL[cls]
        checked += 1
    return checked


def test_instance_lsj_keeps_masks_boxes_and_pixels_aligned(synthetic_records):
    np.random.seed(0)
    mapper = COCOInstanceLSJDatasetMapper(image_size=128, min_scale=0.3, max_scale=2.0)
    checked = 0
    for record in synthetic_records:
        out = mapper(record)
        inst = out["instances"]
        assert out["image"].shape == (3, 128, 128) and out["image"].dtype == torch.uint8
        assert inst.image_size == (128, 128) and inst.gt_masks.dtype == torch.bool
        assert len(inst) <= len(record["annotations"])
        assert inst.gt_masks.flatten(1).any(dim=1).all()  # emptied instances were dropped
        # boxes are the polygons' bounds: the pixel bounds agree up to sharp corners
        assert torch.allclose(
            inst.gt_boxes.tensor, BitMasks(inst.gt_masks).get_bounding_boxes().tensor, atol=1.5
        )
        assert not inst.gt_masks[:, out["padding_mask"]].any()  # no mask on padding
        padded = out["image"][:, out["padding_mask"]]
        assert (padded == 128).all()
        checked += _check_aligned(out["image"], inst.gt_masks, inst.gt_classes)
    assert checked > 20


def test_panoptic_lsj_targets_match_pixels(synthetic_records):
    np.random.seed(1)
    mapper = COCOPanopticLSJDatasetMapper(image_size=128, min_scale=0.5, max_scale=1.5)
    checked = 0
    for record in synthetic_records[:8]:
        out = mapper(record)
        inst = out["instances"]
        assert len(inst) == len(record["segments_info"])  # one target per segment, none dropped
        masks = inst.gt_masks
        assert (masks.sum(dim=0) <= 1).all()  # segments do not overlap
        assert not masks[:, out["padding_mask"]].any()
        assert torch.equal(inst.gt_boxes.tensor, BitMasks(masks).get_bounding_boxes().tensor)
        checked += _check_aligned(out["image"], masks, inst.gt_classes)
    assert checked > 8


def test_semantic_mapper_on_synthetic_data(synthetic_records):
    np.random.seed(2)
    mapper = MaskFormerSemanticDatasetMapper(
        min_size_train=(96, 128), crop_size=64, size_divisibility=64
    )
    out = mapper(synthetic_records[0])
    label, inst = out["sem_seg"], out["instances"]
    assert (
        out["image"].shape[1:] == label.shape
        and label.shape[0] % 64 == 0
        and label.shape[1] % 64 == 0
    )
    present = sorted(set(torch.unique(label).tolist()) - {255})
    assert inst.gt_classes.tolist() == present
    assert all(torch.equal(m, label == c) for m, c in zip(inst.gt_masks, present))
    assert torch.equal(inst.gt_boxes.tensor, BitMasks(inst.gt_masks).get_bounding_boxes().tensor)


def test_semantic_mapper_on_ade20k(ade20k_sample_root):
    np.random.seed(2)
    base = ade20k_sample_root / "ADEChallengeData2016"
    register_ade20k_semantic(
        "ade_map", base / "images" / "validation", base / "annotations_detectron2" / "validation"
    )
    ade = MaskFormerSemanticDatasetMapper()
    for record in DatasetCatalog.get("ade_map"):
        out = ade(record)
        assert out["image"].shape == (3, 512, 512) and out["sem_seg"].shape == (512, 512)
        assert out["sem_seg"].dtype == torch.int64
        classes = out["instances"].gt_classes
        assert 255 not in classes.tolist() and classes.max() < 150


def test_lsj_on_real_coco_drops_crowd_and_handles_empty_images(coco_mini_root):
    register_coco_root(coco_mini_root, prefix="mini_map")
    records = DatasetCatalog.get("mini_map_train")
    np.random.seed(3)
    mapper = COCOInstanceLSJDatasetMapper(image_size=256)
    empty = [r for r in records if not r["annotations"]]
    out = mapper(empty[0])
    assert len(out["instances"]) == 0 and out["instances"].gt_masks.shape == (0, 256, 256)
    crowded = [r for r in records if any(a["iscrowd"] for a in r["annotations"])][0]
    no_flip = COCOInstanceLSJDatasetMapper(
        augmentation=[T.ResizeScale(1.0, 1.0, 256, 256), T.FixedSizeCrop(256)]
    )
    out = no_flip(crowded)
    non_crowd = [a for a in crowded["annotations"] if not a["iscrowd"]]
    assert len(out["instances"]) <= len(non_crowd)
    assert out["instances"].gt_masks.shape[1:] == (256, 256)
    # the whole image fits (scale 1 of 256): nothing is cropped away, nothing dropped
    assert len(out["instances"]) == len(non_crowd)

    panoptic = COCOPanopticLSJDatasetMapper(image_size=256)(
        DatasetCatalog.get("mini_map_train_panoptic")[0]
    )
    assert panoptic["instances"].gt_classes.max() < 133


def test_test_time_mapper_resizes_and_keeps_original_size(coco_mini_root, synthetic_records):
    register_coco_root(coco_mini_root, prefix="mini_test")
    record = DatasetCatalog.get("mini_test_val")[0]
    out = DatasetMapper(is_train=False)(record)  # default: 800 / 1333
    h, w = record["height"], record["width"]
    assert out["image"].shape[1:] == T.ResizeShortestEdge.get_output_shape(h, w, 800, 1333)
    assert (out["height"], out["width"]) == (h, w) and "annotations" not in out

    train = DatasetMapper(
        is_train=True, augmentations=[T.RandomFlip(prob=1.0)], recompute_boxes=True
    )
    out = train(synthetic_records[0])
    assert out["sem_seg"].shape == out["image"].shape[1:]
    masks = BitMasks.from_polygon_masks(out["instances"].gt_masks, 96, 96)
    assert torch.allclose(
        out["instances"].gt_boxes.tensor, masks.get_bounding_boxes().tensor, atol=1.5
    )
    assert _check_aligned(out["image"], masks.tensor, out["instances"].gt_classes) > 0


@pytest.mark.parametrize("mapper_cls", [COCOInstanceLSJDatasetMapper, COCOPanopticLSJDatasetMapper])
def test_lsj_mappers_leave_the_record_unchanged(synthetic_records, mapper_cls):
    """The mappers copy only the record's top level (not its scene, polygons and segments):
    the record must come out exactly as it went in, and mapping it again gives the same
    sample (same augmentation draws)."""
    import copy
    import pickle

    record = synthetic_records[3]
    before = pickle.dumps(copy.deepcopy(record))
    mapper = mapper_cls(image_size=128, min_scale=0.5, max_scale=1.5)
    samples = []
    for _ in range(2):
        np.random.seed(7)  # the augmentations draw from numpy's global generator
        samples.append(mapper(record))
    assert pickle.dumps(record) == before
    first, second = (sample["instances"] for sample in samples)
    assert torch.equal(first.gt_masks, second.gt_masks) and len(first) > 0
    assert torch.equal(first.gt_boxes.tensor, second.gt_boxes.tensor)
    assert torch.equal(samples[0]["image"], samples[1]["image"])
