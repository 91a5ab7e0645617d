"""Visualizer: PNG output, pixels change exactly where masks/segments are, stable class colours."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from detrex_ext.structures import Boxes, Instances, PolygonMasks
from detrex_ext.utils.visualizer import Visualizer, class_color

H, W = 60, 80
GRAY = 100


def _gray_image() -> np.ndarray:
    return np.full((H, W, 3), GRAY, dtype=np.uint8)


def _blend(color, alpha=0.5) -> np.ndarray:
    return (GRAY * (1 - alpha) + np.asarray(color, dtype=np.float32) * alpha).astype(np.uint8)


def test_instance_mask_png_changes_pixels_only_inside_the_mask(tmp_path):
    mask = torch.zeros(1, H, W, dtype=torch.bool)
    mask[0, 10:30, 20:50] = True
    instances = Instances((H, W), pred_masks=mask, pred_classes=torch.tensor([3]))
    instances.scores = torch.tensor([0.9])
    out = tmp_path / "vis.png"
    image = _gray_image()
    Visualizer(image).draw_instances(instances, show_boxes=False, show_labels=False).save(str(out))

    assert (image == GRAY).all()  # the caller's array is not drawn on
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    drawn = np.asarray(Image.open(out).convert("RGB"))
    assert drawn.shape == (H, W, 3)
    inside = np.zeros((H, W), dtype=bool)
    inside[11:29, 21:49] = True  # the mask without its 1-pixel outline
    assert (drawn[inside] == _blend(class_color(3))).all()
    assert (drawn[~mask[0].numpy()] == GRAY).all()  # nothing outside the mask changed
    outline = mask[0].numpy() & ~inside
    assert (drawn[outline] == (np.asarray(class_color(3)) * 0.6).astype(np.uint8)).all()


def test_boxes_and_labels_are_drawn_in_the_class_colour():
    boxes = Boxes(torch.tensor([[5.0, 20.0, 70.0, 55.0]]))
    instances = Instances((H, W), pred_boxes=boxes, pred_classes=torch.tensor([1]))
    instances.scores = torch.tensor([0.75])
    metadata = {"thing_classes": ["cat", "dog"], "thing_colors": [(0, 0, 255), (255, 0, 0)]}
    drawn = Visualizer(_gray_image(), metadata).draw_instances(instances).get_output().get_image()
    assert (drawn[40, 5] == (255, 0, 0)).all() and (drawn[55, 40] == (255, 0, 0)).all()
    assert (drawn[40, 40] == GRAY).all()  # inside the box, below the label: untouched
    label_area = drawn[20:30, 5:40]
    assert (label_area == (178, 0, 0)).all(axis=-1).any()  # label background, 0.7 x colour
    assert (label_area.min(axis=-1) > 180).any()  # white (anti-aliased) text


def test_class_colours_are_stable_distinct_and_overridable():
    colors = [class_color(i) for i in range(200)]
    assert colors == [class_color(i) for i in range(200)]
    assert len(set(colors)) == 200
    vis = Visualizer(_gray_image(), {"stuff_colors": [(1, 2, 3)]})
    assert vis.color(0, is_thing=False) == (1, 2, 3)
    assert vis.color(5, is_thing=False) == class_color(5)
    assert vis.class_name(7) == "class 7"


def test_sem_seg_labels_and_scores_skip_ignored_pixels():
    labels = np.full((H, W), 255, dtype=np.int64)
    labels[:, :30] = 0
    labels[:, 30:60] = 4
    drawn = Visualizer(_gray_image()).draw_sem_seg(labels, min_label_area=1.1).get_image()
    assert (drawn[5:55, 1:29] == _blend(class_color(0))).all()
    assert (drawn[5:55, 31:59] == _blend(class_color(4))).all()
    assert (drawn[:, 60:] == GRAY).all()

    scores = torch.zeros(5, H, W)
    scores[2, :, :40] = 1.0  # argmax 0 elsewhere
    drawn = Visualizer(_gray_image()).draw_sem_seg(scores, min_label_area=1.1).get_image()
    assert (drawn[5:55, 1:39] == _blend(class_color(2))).all()
    assert (drawn[5:55, 41:79] == _blend(class_color(0))).all()


def test_panoptic_segments_share_their_category_colour_and_void_is_untouched():
    ids = torch.zeros(H, W, dtype=torch.int32)
    ids[:, :20] = 1
    ids[:, 20:40] = 2
    segments = [
        {"id": 1, "category_id": 6, "isthing": True},
        {"id": 2, "category_id": 6, "isthing": True},
    ]
    out = (
        Visualizer(_gray_image())
        .draw_outputs({"panoptic_seg": (ids, segments)})
        .get_output()
        .get_image()
    )
    assert (out[:25, 40:] == GRAY).all() and (out[50:, 40:] == GRAY).all()  # labels at mid-height
    assert (out[10, 5] == _blend(class_color(6))).all() and (out[10, 25] == out[10, 5]).all()


def test_ground_truth_polygons_and_wrong_mask_size():
    polygons = PolygonMasks([[np.array([10.0, 10.0, 40.0, 10.0, 40.0, 40.0, 10.0, 40.0])]])
    record = {"instances": Instances((H, W), gt_masks=polygons, gt_classes=torch.tensor([2]))}
    out = Visualizer(_gray_image()).draw_dataset_dict(record).get_image()
    assert (out[15, 15] == _blend(class_color(2))).all()  # the label sits at the centre
    assert (out[50, 70] == GRAY).all()
    with pytest.raises(ValueError, match="does not match the image"):
        Visualizer(_gray_image()).draw_mask(np.ones((H + 1, W), dtype=bool), (0, 0, 0))


def test_accepts_pil_and_chw_tensor_images():
    chw = torch.full((3, H, W), GRAY, dtype=torch.uint8)
    assert Visualizer(chw).get_output().get_image().shape == (H, W, 3)
    pil = Image.new("L", (W, H), GRAY)
    assert (Visualizer(pil).get_output().get_image() == GRAY).all()
