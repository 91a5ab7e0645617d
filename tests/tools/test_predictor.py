"""Predictor on the tiny bright-region model: inputs, test-time resize, weights, filtering, batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tool_helpers import TINY_CONFIG, half_bright_image

from detrex_ext.engine.predictor import Predictor, filter_instances
from detrex_ext.structures import Instances

H, W = 48, 96  # resized by the config's ResizeShortestEdge(32, max 64) to 32 x 64


def test_resizes_loads_weights_and_returns_original_resolution(tiny_weights):
    predictor = Predictor.from_config(str(TINY_CONFIG), tiny_weights, device="cpu")
    assert torch.equal(predictor.model.pixel_scorer.weight, torch.full((1, 3, 1, 1), 1 / 3))
    output = predictor(half_bright_image())
    assert predictor.model.seen_sizes == [(32, 64)]  # the config's test-time resize was applied
    instances = output["instances"]
    assert isinstance(instances, Instances) and instances.image_size == (H, W)
    assert instances.pred_masks.shape == (2, H, W)
    assert instances.scores.tolist() == pytest.approx([0.9, 0.2])  # sorted by score
    bright = instances.pred_masks[0]
    assert bright[:, : W // 2 - 2].all() and not bright[:, W // 2 + 2 :].any()
    assert (
        instances.pred_boxes.tensor[0, 0] == 0
        and abs(instances.pred_boxes.tensor[0, 2] - W / 2) <= 2
    )
    assert output["sem_seg"].shape == (5, H, W)


def test_score_threshold_and_top_k(tiny_weights):
    predictor = Predictor.from_config(
        str(TINY_CONFIG), tiny_weights, device="cpu", score_threshold=0.5
    )
    assert predictor(half_bright_image())["instances"].scores.tolist() == pytest.approx([0.9])
    assert len(predictor(half_bright_image(), score_threshold=0.1)["instances"]) == 2
    assert predictor(half_bright_image(), score_threshold=0.0, top_k=1)[
        "instances"
    ].pred_classes.tolist() == [1]
    scores = torch.tensor([0.1, 0.7, 0.4, 0.7])
    kept = filter_instances(Instances((1, 1), scores=scores), 0.3, 2)
    assert kept.scores.tolist() == pytest.approx([0.7, 0.7])


def test_paths_pil_and_arrays_single_and_batched(tiny_weights, tmp_path):
    image = half_bright_image()
    path = tmp_path / "image.png"
    Image.fromarray(image).save(path)
    predictor = Predictor.from_config(str(TINY_CONFIG), tiny_weights, device="cpu", batch_size=2)
    outputs = predictor([str(path), Image.fromarray(image), image])
    assert isinstance(outputs, list) and len(outputs) == 3
    assert predictor.model.seen_sizes == [(32, 64)] * 3
    for output in outputs:  # the same pixels give the same predictions whatever the input type
        assert torch.equal(output["instances"].pred_masks, outputs[0]["instances"].pred_masks)
    gray = predictor(image[:, :, 0])  # HW grayscale is accepted as RGB
    assert torch.equal(gray["instances"].pred_masks, outputs[0]["instances"].pred_masks)


def test_bgr_models_get_flipped_channels(tmp_path):
    red_only = tmp_path / "red.pth"
    weight = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    torch.save({"pixel_scorer.weight": weight, "pixel_scorer.bias": torch.zeros(1)}, red_only)
    red = np.zeros((H, W, 3), dtype=np.uint8)
    red[..., 0] = 255
    rgb = Predictor.from_config(str(TINY_CONFIG), red_only, device="cpu")
    bgr = Predictor.from_config(
        str(TINY_CONFIG),
        red_only,
        device="cpu",
        overrides=["dataloader.test.mapper.image_format=BGR"],
    )
    assert rgb(red)["instances"].pred_masks[0].all()
    assert not bgr(red)["instances"].pred_masks[0].any()


def test_bad_inputs_get_clear_errors(tiny_weights):
    predictor = Predictor.from_config(str(TINY_CONFIG), tiny_weights, device="cpu")
    with pytest.raises(ValueError, match="transpose to HWC"):
        predictor(np.zeros((3, H, W), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        predictor(np.zeros((H, W, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="file path"):
        predictor(torch.zeros(H, W, 3))
    with pytest.raises(FileNotFoundError, match="neither an existing file"):
        Predictor.from_config(str(TINY_CONFIG), "no_such_weights.pth", device="cpu")
