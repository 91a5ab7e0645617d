"""The prediction pictures written during training (``detrex_ext.engine.visualize_hook``), with a
scripted model whose outputs are known."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from detrex_ext.data import transforms as T
from detrex_ext.data.datasets.synthetic import load_synthetic_shapes
from detrex_ext.engine.visualize_hook import _CAPTION_HEIGHT, _GAP, draw_predictions
from detrex_ext.structures import Boxes, BoxMode, Instances
from detrex_ext.utils.visualizer import class_color

SIZE = 64  # record size; drawn at 128 (min_display_size)
SHOWN = 128
METADATA = {"thing_classes": ["circle", "square", "triangle"], "stuff_classes": ["a"] * 5}


class ScriptedModel(nn.Module):
    """Returns two square instances (scores 0.9 and 0.2) and a panoptic map at the requested
    output size, and records what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.inputs: list[dict] = []
        self.was_training: list[bool] = []

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        self.inputs += batched_inputs
        self.was_training.append(self.training)
        outputs = []
        for x in batched_inputs:
            h, w = x["height"], x["width"]
            masks = torch.zeros(2, h, w, dtype=torch.bool)
            masks[0, 10:50, 10:50] = True  # kept (score 0.9)
            masks[1, 70:110, 70:110] = True  # dropped (score 0.2)
            instances = Instances((h, w), scores=torch.tensor([0.9, 0.2]))
            instances.pred_classes = torch.tensor([1, 2])
            instances.pred_masks = masks
            instances.pred_boxes = Boxes(torch.tensor([[10.0, 10, 50, 50], [70, 70, 110, 110]]))
            ids = torch.zeros(h, w, dtype=torch.int32)
            ids[:, w // 2 :] = 1
            segments = [{"id": 1, "category_id": 0, "isthing": True}]
            outputs.append({"instances": instances, "panoptic_seg": (ids, segments)})
        return outputs


def _panel(picture: Image.Image, row: int, column: int) -> np.ndarray:
    """The pixels of one drawn panel of the grid."""
    x = _GAP + column * (SHOWN + _GAP)
    y = _GAP + row * (SHOWN + _CAPTION_HEIGHT + _GAP) + _CAPTION_HEIGHT
    return np.asarray(picture.convert("RGB"))[y : y + SHOWN, x : x + SHOWN].astype(int)


def test_draws_ground_truth_thresholded_instances_and_panoptic_at_display_size():
    records = load_synthetic_shapes("vis_test", num_images=2, image_size=SIZE, seed=3)
    model = ScriptedModel().train()
    picture = draw_predictions(
        model,
        records,
        [T.ResizeShortestEdge(short_edge_length=32, max_size=64)],
        METADATA,
        score_threshold=0.5,
        min_display_size=SHOWN,
    )
    # the model saw the evaluation input (resized to 32) and was asked for display-size outputs,
    # in eval mode, and was put back in training mode
    assert [tuple(x["image"].shape) for x in model.inputs] == [(3, 32, 32)] * 2
    assert {(x["height"], x["width"]) for x in model.inputs} == {(SHOWN, SHOWN)}
    assert model.was_training == [False, False] and model.training

    # 2 rows x 3 panels (ground truth, instances, panoptic)
    assert picture.size == (3 * (SHOWN + _GAP) + _GAP, 2 * (SHOWN + _CAPTION_HEIGHT + _GAP) + _GAP)
    image = np.asarray(
        Image.fromarray(records[0]["scene"].image()).resize((SHOWN, SHOWN), Image.BILINEAR)
    ).astype(int)
    instances = _panel(picture, 0, 1)
    changed = np.abs(instances - image).sum(axis=2) > 0
    assert changed[15:45, 30:45].all()  # inside the kept mask (below its label)
    assert not changed[75:105, 75:105].any()  # the 0.2-score instance is not drawn
    panoptic = _panel(picture, 0, 2)
    changed = np.abs(panoptic - image).sum(axis=2) > 0
    assert changed[:, 70:].mean() > 0.9 and changed[:, :60].mean() < 0.05

    # ground truth: every pixel belongs to a segment of the synthetic panoptic labels
    truth = _panel(picture, 1, 0)
    image = np.asarray(
        Image.fromarray(records[1]["scene"].image()).resize((SHOWN, SHOWN), Image.BILINEAR)
    ).astype(int)
    assert (np.abs(truth - image).sum(axis=2) > 0).mean() > 0.9


def test_instance_annotations_are_drawn_when_there_is_no_panoptic_truth():
    """COCO-style records (boxes + polygons, no segments_info) get their instances drawn."""
    record = load_synthetic_shapes("vis_test", num_images=1, image_size=SIZE, seed=3)[0]
    record.pop("segments_info")
    record["annotations"] = [
        {
            "bbox": [8.0, 8.0, 16.0, 16.0],
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": 1,
            "segmentation": [[8.0, 8.0, 24.0, 8.0, 24.0, 24.0, 8.0, 24.0]],
        }
    ]
    picture = draw_predictions(ScriptedModel(), [record], [], METADATA, min_display_size=SHOWN)
    image = np.asarray(
        Image.fromarray(record["scene"].image()).resize((SHOWN, SHOWN), Image.BILINEAR)
    ).astype(int)
    changed = np.abs(_panel(picture, 0, 0) - image).sum(axis=2) > 0
    assert changed[34:46, 34:46].all()  # the square, scaled x2: 16..48
    assert not changed[60:, 60:].any()


def test_semantic_labels_are_drawn_for_semantic_only_records():
    """Semantic datasets (ADE20K style: a label map, no instances) get their label map drawn."""
    record = load_synthetic_shapes("vis_test", num_images=1, image_size=SIZE, seed=3)[0]
    record.pop("segments_info")
    record.pop("annotations")
    label = record["scene"].sem_seg()
    picture = draw_predictions(ScriptedModel(), [record], [], METADATA, min_display_size=SHOWN)
    image = np.asarray(
        Image.fromarray(record["scene"].image()).resize((SHOWN, SHOWN), Image.BILINEAR)
    ).astype(int)
    drawn = _panel(picture, 0, 0)
    assert (np.abs(drawn - image).sum(axis=2) > 0).mean() > 0.9  # every region is tinted
    # blended at alpha 0.5 (drawn = (image + colour) / 2): each class shows its own colour
    colour = 2 * drawn - image
    for class_id in (3, 4):  # sky, ground
        region = np.kron(label == class_id, np.ones((2, 2), dtype=bool))  # at display size
        median = np.median(colour[region], axis=0)
        assert np.abs(median - np.array(class_color(class_id))).max() <= 3, class_id
