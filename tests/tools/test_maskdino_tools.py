"""Predictor, demo and benchmark on the real Mask DINO configs, reduced to run in seconds on CPU
(random weights: these check shapes, resizing and plumbing, not accuracy)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from tool_helpers import load_tool

from detrex_ext.engine.predictor import Predictor

pytestmark = pytest.mark.slow

INSTANCE_CONFIG = "maskdino/maskdino_r50_coco_instance_seg_50ep.py"
PANOPTIC_CONFIG = "maskdino/maskdino_r50_coco_panoptic_seg_50ep.py"
# fewer queries and layers, 64-pixel test resize; architecture and post-processing unchanged
REDUCED = [
    "model.num_queries=20",
    "model.test_topk_per_image=10",
    "model.sem_seg_head.pixel_decoder.transformer_enc_layers=1",
    "model.sem_seg_head.transformer_predictor.dec_layers=2",
    "model.sem_seg_head.transformer_predictor.dn_num=5",
    "model.criterion.num_points=256",
    "dataloader.test.mapper.augmentations.0.short_edge_length=64",
    "dataloader.test.mapper.augmentations.0.max_size=96",
]
H, W = 120, 160  # resized to 64 x 85, padded to 64 x 96 inside the model


@pytest.fixture(scope="module")
def instance_predictor() -> Predictor:
    torch.manual_seed(0)
    return Predictor.from_config(INSTANCE_CONFIG, overrides=REDUCED, device="cpu")


def _image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def test_predictor_resizes_and_returns_detectron2_instances(instance_predictor):
    seen = []
    hook = instance_predictor.model.backbone.register_forward_pre_hook(
        lambda module, args: seen.append(tuple(args[0].shape))
    )
    try:
        instances = instance_predictor(_image())["instances"]
    finally:
        hook.remove()
    assert seen == [(1, 3, 64, 96)]  # 64 x 85 after the test resize, padded to a multiple of 32
    assert len(instances) == 10 and instances.image_size == (H, W)
    assert instances.pred_masks.shape == (10, H, W)
    assert instances.pred_boxes.tensor.shape == (10, 4)
    assert (instances.pred_classes < 80).all()
    assert torch.all(instances.scores[:-1] >= instances.scores[1:])  # sorted by score
    assert instance_predictor.metadata.thing_classes[0] == "person"
    median = float(instances.scores.median())
    assert len(instance_predictor(_image(), score_threshold=median)["instances"]) >= 5
    batched = instance_predictor([_image(), Image.fromarray(_image())])
    assert torch.equal(batched[0]["instances"].scores, batched[1]["instances"].scores)


def test_demo_draws_a_maskdino_prediction(tmp_path):
    Image.fromarray(_image()).save(tmp_path / "a.jpg")
    demo = load_tool("demo")
    argv = ["--config-file", INSTANCE_CONFIG, "--device", "cpu", "--input", str(tmp_path / "a.jpg")]
    argv += [
        "--output",
        str(tmp_path / "out"),
        "--score-thresh",
        "0",
        "--top-k",
        "3",
        "--save-json",
    ]
    assert demo.main(argv + REDUCED) == 0
    drawn = np.asarray(Image.open(tmp_path / "out" / "a.png").convert("RGB"))
    original = np.asarray(Image.open(tmp_path / "a.jpg").convert("RGB"))
    assert drawn.shape == original.shape and (drawn != original).any()
    assert len(json.loads((tmp_path / "out" / "a.json").read_text())) == 3


def test_panoptic_config_outputs_all_three_tasks():
    predictor = Predictor.from_config(PANOPTIC_CONFIG, overrides=REDUCED, device="cpu")
    output = predictor(_image())
    assert output["sem_seg"].shape == (133, H, W)
    ids, segments = output["panoptic_seg"]
    assert ids.shape == (H, W)
    assert {int(s["id"]) for s in segments} <= set(ids.unique().tolist()) | {0}
    assert len(output["instances"]) <= 10


def test_benchmark_runs_inference_and_a_training_step(tmp_path, capsys):
    benchmark = load_tool("benchmark")
    argv = ["--config-file", INSTANCE_CONFIG, "--device", "cpu", "--height", "64", "--width", "96"]
    argv += ["--train-batch", "1", "--train-size", "64", "--warmup", "1", "--repeats", "1"]
    assert benchmark.main(argv + ["--output", str(tmp_path / "b.json"), *REDUCED]) == 0
    results = json.loads((tmp_path / "b.json").read_text())
    assert results["inference"]["network_modules"] == ["backbone", "sem_seg_head"]
    training = results["training"]["fp32"]
    assert np.isfinite(training["last_loss"]) and training["last_loss"] > 0
    assert "training step, batch 1 @ 64x64" in capsys.readouterr().out
