"""Structures: detectron2 attribute API, checked against hand-computed values and brute force."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torchvision

from detrex_ext.structures import (
    BitMasks,
    Boxes,
    BoxMode,
    ImageList,
    Instances,
    PolygonMasks,
    matched_pairwise_iou,
    pairwise_ioa,
    pairwise_iou,
    polygon_area,
    polygons_to_bitmask,
)


def test_boxmode_convert_roundtrip_and_types():
    assert BoxMode.convert([10, 20, 30, 40], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS) == [10, 20, 40, 60]
    assert BoxMode.convert((10, 20, 40, 60), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS) == (10, 20, 30, 40)
    arr = np.array([[0.0, 0.0, 4.0, 2.0], [1.0, 1.0, 2.0, 3.0]], dtype=np.float32)
    xyxy = BoxMode.convert(arr, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
    assert xyxy.dtype == np.float32
    np.testing.assert_allclose(xyxy, [[0, 0, 4, 2], [1, 1, 3, 4]])
    t = torch.tensor([[1.0, 2.0, 5.0, 8.0]])
    back = BoxMode.convert(BoxMode.convert(t, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS), 1, 0)
    assert torch.equal(back, t)
    # a rotated box at 90 degrees swaps width and height
    rotated = BoxMode.convert([10.0, 10.0, 4.0, 2.0, 90.0], BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS)
    np.testing.assert_allclose(rotated, [9, 8, 11, 12], atol=1e-6)
    with pytest.raises(ValueError, match="relative"):
        BoxMode.convert([0, 0, 1, 1], BoxMode.XYXY_REL, BoxMode.XYXY_ABS)


def test_boxes_api():
    boxes = Boxes(
        torch.tensor([[0.0, 0.0, 10.0, 5.0], [5.0, 5.0, 5.0, 20.0], [-3.0, 2.0, 30.0, 9.0]])
    )
    assert len(boxes) == 3
    assert boxes.area().tolist() == [50.0, 0.0, 231.0]
    assert boxes.nonempty().tolist() == [True, False, True]
    assert boxes.get_centers()[0].tolist() == [5.0, 2.5]
    assert isinstance(boxes[0], Boxes) and len(boxes[0]) == 1
    assert len(boxes[boxes.nonempty()]) == 2
    clipped = boxes.clone()
    clipped.clip((8, 20))  # (height, width)
    assert clipped.tensor[2].tolist() == [0.0, 2.0, 20.0, 8.0]
    assert boxes.tensor[2, 0] == -3.0  # clone is independent
    assert Boxes(torch.zeros(0)).tensor.shape == (0, 4)
    assert len(Boxes.cat([boxes, boxes[1:]])) == 5
    assert Boxes.cat([]).tensor.shape == (0, 4)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        Boxes(torch.zeros(3, 5))


def test_pairwise_iou_matches_hand_values_and_torchvision():
    a = Boxes(torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]]))
    b = Boxes(torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 5.0, 5.0]]))
    iou = pairwise_iou(a, b)
    expected = torch.tensor([[1 / 7, 1.0, 0.0], [0.0, 0.25, 0.0]])
    assert torch.allclose(iou, expected)
    assert torch.allclose(pairwise_ioa(a, b)[:, :2], torch.tensor([[0.25, 1.0], [0.0, 0.25]]))
    rand = torch.rand(20, 4) * 50
    rand[:, 2:] += rand[:, :2]
    bx = Boxes(rand)
    assert torch.allclose(pairwise_iou(bx, bx[:7]), torchvision.ops.box_iou(rand, rand[:7]))
    assert torch.allclose(matched_pairwise_iou(bx, bx), torch.ones(20))


def test_instances_fields_indexing_cat_and_pickle():
    inst = Instances((30, 40), gt_classes=torch.tensor([1, 2, 3]))
    inst.gt_boxes = Boxes(torch.arange(12.0).view(3, 4))
    inst.names = ["a", "b", "c"]
    assert inst.image_size == (30, 40)
    assert len(inst) == 3 and inst.has("gt_boxes") and not inst.has("scores")
    with pytest.raises(ValueError, match="length"):
        inst.scores = torch.ones(2)
    with pytest.raises(AttributeError, match="Cannot find field 'gt_masks'"):
        _ = inst.gt_masks
    picked = inst[torch.tensor([False, True, True])]
    assert picked.gt_classes.tolist() == [2, 3] and picked.names == ["b", "c"]
    last = inst[-1]
    assert len(last) == 1 and last.gt_classes.tolist() == [3] and last.names == ["c"]
    assert inst[1:].names == ["b", "c"]
    both = Instances.cat([inst, picked])
    assert both.gt_classes.tolist() == [1, 2, 3, 2, 3] and len(both.gt_boxes) == 5
    assert both.names == ["a", "b", "c", "b", "c"]
    moved = inst.to("cpu")
    assert moved.gt_boxes.tensor.device.type == "cpu"
    restored = pickle.loads(pickle.dumps(inst))
    assert restored.gt_classes.tolist() == [1, 2, 3] and restored.image_size == (30, 40)
    inst.remove("names")
    assert set(inst.get_fields()) == {"gt_classes", "gt_boxes"}
    with pytest.raises(IndexError):
        inst[3]


def _brute_force_bounds(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def test_bitmasks_bounding_boxes_match_brute_force():
    rng = np.random.default_rng(0)
    masks = rng.random((6, 17, 23)) > 0.97
    masks[2] = False  # an empty mask gets the (0, 0, 0, 0) box
    masks[3] = False
    masks[3, 4, 7] = True  # a single pixel
    bm = BitMasks(masks)
    boxes = bm.get_bounding_boxes().tensor.tolist()
    assert boxes == [_brute_force_bounds(m) for m in masks]
    assert boxes[3] == [7.0, 4.0, 8.0, 5.0]
    assert bm.nonempty().tolist() == [m.any() for m in masks]
    assert bm.area().tolist() == [int(m.sum()) for m in masks]
    assert len(bm[bm.nonempty()]) == 5 and isinstance(bm[0], BitMasks)
    assert BitMasks.cat([bm, bm[:2]]).tensor.shape == (8, 17, 23)
    assert BitMasks(torch.zeros(0, 4, 5)).get_bounding_boxes().tensor.shape == (0, 4)


def test_polygons_rasterise_with_pycocotools_pixel_convention():
    # a square covering pixels [2, 6) x [1, 4): 4 columns x 3 rows
    square = np.array([2.0, 1.0, 6.0, 1.0, 6.0, 4.0, 2.0, 4.0])
    mask = polygons_to_bitmask([square], 8, 10)
    expected = np.zeros((8, 10), dtype=bool)
    expected[1:4, 2:6] = True
    assert (mask == expected).all()
    assert polygon_area(square[0::2], square[1::2]) == 12.0
    assert not polygons_to_bitmask([], 5, 5).any()

    triangle = [0.0, 0.0, 4.0, 0.0, 0.0, 4.0]
    poly = PolygonMasks([[square], [triangle, square + 1]])
    assert poly.get_bounding_boxes().tensor.tolist() == [[2, 1, 6, 4], [0, 0, 7, 5]]
    assert poly.area().tolist() == [12.0, 20.0]
    assert len(poly[torch.tensor([False, True])]) == 1
    assert len(PolygonMasks.cat([poly, poly[0]])) == 3
    dense = BitMasks.from_polygon_masks(poly, 8, 10)
    assert dense.tensor.shape == (2, 8, 10) and (dense.tensor[0].numpy() == expected).all()
    with pytest.raises(ValueError, match="coordinates"):
        PolygonMasks([[[1.0, 2.0, 3.0]]])


def test_image_list_pads_bottom_right_with_divisibility():
    a = torch.ones(3, 5, 7)
    b = torch.full((3, 9, 4), 2.0)
    images = ImageList.from_tensors([a, b], size_divisibility=8, pad_value=-1.0)
    assert images.tensor.shape == (2, 3, 16, 8)
    assert images.image_sizes == [(5, 7), (9, 4)]
    assert (images.tensor[0, :, :5, :7] == 1).all() and (images.tensor[0, :, 5:, :] == -1).all()
    assert (images.tensor[1, :, :9, :4] == 2).all() and (images.tensor[1, :, :, 4:] == -1).all()
    assert torch.equal(images[1], b)
    single = ImageList.from_tensors([a], size_divisibility=4)
    assert single.tensor.shape == (1, 3, 8, 8) and single.tensor[0, :, 5:].abs().sum() == 0
    square = ImageList.from_tensors([a], padding_constraints={"square_size": 12})
    assert square.tensor.shape == (1, 3, 12, 12)
    with pytest.raises(ValueError, match="leading"):
        ImageList.from_tensors([a, torch.ones(1, 5, 7)])
