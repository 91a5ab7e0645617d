"""detectron2's Visualizer API on our Visualizer: ColorMode, draw_instance_predictions,
overlay_instances, draw_binary_mask, draw_soft_mask, draw_dataset_dict on raw dicts, .output /
VisImage and scale. Pixel values are checked against the blending rule by hand."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image

from detrex_ext.structures import Boxes, BoxMode, Instances
from detrex_ext.utils.visualizer import ColorMode, VisImage, Visualizer, class_color

H, W = 60, 80
GRAY = 100


def _image(value=GRAY) -> np.ndarray:
    return np.full((H, W, 3), value, dtype=np.uint8)


def _blend(base, color, alpha) -> np.ndarray:
    base, color = np.asarray(base, np.float32), np.asarray(color, np.float32)
    return (base * (1 - alpha) + color * alpha).astype(np.uint8)


def _predictions() -> Instances:
    masks = torch.zeros(1, H, W, dtype=torch.bool)
    masks[0, 10:30, 20:50] = True
    instances = Instances((H, W), pred_masks=masks, pred_classes=torch.tensor([1]))
    instances.scores = torch.tensor([0.87])
    instances.pred_boxes = Boxes(torch.tensor([[20.0, 10.0, 50.0, 30.0]]))
    return instances


def test_draw_instance_predictions_in_each_color_mode():
    metadata = {"thing_classes": ["a", "dog"], "thing_colors": [[0, 0, 0], [0, 0, 255]]}
    out = Visualizer(_image(), metadata).draw_instance_predictions(_predictions())
    assert isinstance(out, VisImage)
    image = out.get_image()
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert (image[28, 40] == _blend(GRAY, (0, 0, 255), 0.5)).all()  # thing_colors[1], alpha 0.5
    assert (image[50, 70] == GRAY).all()
    vis = Visualizer(_image(), metadata, instance_mode=ColorMode.SEGMENTATION)
    assert (vis.draw_instance_predictions(_predictions()).get_image()[28, 40] == _blend(
        GRAY, (0, 0, 255), 0.8)).all()  # fmt: skip
    assert [text for _, text, _ in vis._labels] == ["dog 87%"]
    colored = np.zeros((H, W, 3), dtype=np.uint8)
    colored[..., 0], colored[..., 1] = 200, 100
    bw = Visualizer(colored, instance_mode=ColorMode.IMAGE_BW)
    image = bw.draw_instance_predictions(_predictions()).get_image()
    assert (image[50, 70] == 100).all()  # grey outside the masks: the mean of 200, 100, 0
    assert (image[28, 40] == _blend((200, 100, 0), class_color(1), 0.3)).all()
    assert [m.value for m in ColorMode] == [0, 1, 2]


def test_overlay_instances_takes_polygons_rle_and_float_colors():
    polygon = [[10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]]
    dense = np.zeros((H, W), dtype=np.uint8, order="F")
    dense[40:50, 60:70] = 1
    rle = mask_util.encode(dense)
    vis = Visualizer(_image())
    out = vis.overlay_instances(
        masks=[polygon, rle],
        labels=["x", "y"],
        assigned_colors=[(1.0, 0.0, 0.0), "#00ff00"],
        alpha=0.4,
    )
    image = out.get_image()
    assert (image[12, 12] == _blend(GRAY, (255, 0, 0), 0.4)).all()  # labels sit mid-mask
    assert (image[42, 62] == _blend(GRAY, (0, 255, 0), 0.4)).all()
    assert (image[5, 5] == GRAY).all()
    with pytest.raises(ValueError, match="different counts"):
        vis.overlay_instances(masks=[polygon], labels=["a", "b"])
    boxes_only = Visualizer(_image()).overlay_instances(
        boxes=np.array([[5.0, 5.0, 40.0, 40.0]]), assigned_colors=[(0, 0, 255)]
    )
    assert (boxes_only.get_image()[5, 20] == (0, 0, 255)).all()  # the box's top edge


def test_binary_and_soft_masks():
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[10:20, 10:20] = 1
    image = Visualizer(_image()).draw_binary_mask(mask, color="blue", alpha=0.5).get_image()
    assert (image[15, 15] == _blend(GRAY, (0, 0, 255), 0.5)).all()
    assert (image[10, 10] == (0, 0, 153)).all()  # the outline: 0.6 x the colour
    tiny = np.zeros((H, W), dtype=np.uint8)
    tiny[0, :5] = 1  # 5 pixels < area_threshold 10: not drawn
    assert (Visualizer(_image()).draw_binary_mask(tiny, "red").get_image() == GRAY).all()
    soft = np.zeros((H, W), dtype=np.float32)
    soft[30:40, 30:40] = 0.5
    image = Visualizer(_image()).draw_soft_mask(soft, (1.0, 0.0, 0.0), alpha=0.5).get_image()
    assert (image[35, 35] == _blend(GRAY, (255, 0, 0), 0.25)).all()  # opacity 0.5 * 0.5
    assert (image[30, 30] == image[35, 35]).all()  # no outline
    assert (image[20, 20] == GRAY).all()


def test_draw_dataset_dict_draws_raw_annotations(tmp_path):
    metadata = {"thing_classes": ["circle", "square"], "stuff_classes": ["sky", "ground"]}
    labels = np.full((H, W), 255, dtype=np.uint8)
    labels[50:, :] = 1
    Image.fromarray(labels).save(tmp_path / "sem.png")
    record = {
        "file_name": "unused.jpg",
        "height": H,
        "width": W,
        "sem_seg_file_name": str(tmp_path / "sem.png"),
        "annotations": [
            {
                "bbox": [10, 10, 20, 20],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": 1,
                "segmentation": [[10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]],
            },
            {
                "bbox": [40, 5, 70, 25],
                "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": 0,
                "iscrowd": 1,
                "segmentation": mask_util.encode(
                    np.asfortranarray(
                        np.pad(np.ones((20, 30), np.uint8), ((5, H - 25), (40, W - 70)))
                    )
                ),
            },  # fmt: skip
        ],
    }
    vis = Visualizer(_image(), metadata)
    image = vis.draw_dataset_dict(record).get_image()
    assert (image[27, 15] == _blend(GRAY, class_color(1), 0.5)).all()  # below its label
    assert (image[22, 55] == _blend(GRAY, class_color(0), 0.5)).all()
    assert (image[52, 5] == _blend(GRAY, class_color(1), 0.5)).all()  # "ground" from the PNG
    assert (image[40, 5] == GRAY).all()
    texts = [text for _, text, _ in vis._labels]
    assert "square" in texts and "circle|crowd" in texts and "ground" in texts


def test_scale_and_output():
    vis = Visualizer(_image(), scale=0.5)
    assert vis.output.get_image().shape == (H // 2, W // 2, 3)
    assert vis.get_output().scale == 0.5


def test_draw_sem_seg_takes_detectron2_arguments():
    labels = np.full((H, W), 255, dtype=np.uint8)
    labels[10:30, 10:30] = 2
    labels[0, 0] = 4  # one pixel: below area_threshold
    vis = Visualizer(_image())
    image = vis.draw_sem_seg(labels, 5, 0.8, False, (1.0, 1.0, 1.0)).get_image()
    assert vis._labels == []  # draw_text=False
    assert (image[20, 20] == _blend(GRAY, class_color(2), 0.8)).all()
    assert (image[10, 20] == 255).all()  # the edge colour
    assert (image[0, 0] == GRAY).all()
