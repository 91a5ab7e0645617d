"""The PyTorch-free ONNX runtime on an exported reduced R50 panoptic model: inputs of any size and
type, results mapped back to the original size, raw exports, clear errors, and tools/demo.py
--onnx drawing without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detrex_ext.export import InstancePredictions, OnnxPredictor

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR))


@pytest.fixture(scope="module")
def onnx_file(r50_panoptic_export) -> Path:
    return r50_panoptic_export["grid_sample"][1]


def test_outputs_are_mapped_back_to_the_original_size(onnx_file):
    predictor = OnnxPredictor(onnx_file)
    image = _image(128, 192)  # twice the exported 64x96: resized by exactly 1/2
    result = predictor(image)
    canvas, sizes = predictor.preprocess(image)
    assert sizes == {"height": 128, "width": 192, "resized_h": 64, "resized_w": 96}
    raw = {k: v[0] for k, v in predictor.run(canvas[None]).items()}
    valid = raw["instance_valid"].astype(bool)
    order = np.argsort(-raw["instance_scores"][valid], kind="stable")
    instances = result["instances"]
    assert isinstance(instances, InstancePredictions) and instances.image_size == (128, 192)
    np.testing.assert_allclose(instances.scores, raw["instance_scores"][valid][order])
    np.testing.assert_allclose(instances.pred_boxes, raw["instance_boxes"][valid][order] * 2)
    assert instances.pred_masks.shape == (len(instances), 128, 192)
    assert instances.pred_masks.dtype == np.bool_
    # nearest-neighbour upsampling by 2 repeats every pixel of the label maps
    upsampled = raw["sem_seg"].repeat(2, 0).repeat(2, 1)
    assert np.array_equal(result["sem_seg"], upsampled)
    ids, segments_info = result["panoptic_seg"]
    assert np.array_equal(ids, raw["panoptic_seg"].repeat(2, 0).repeat(2, 1))
    assert {s["id"] for s in segments_info} == set(np.unique(ids)) - {0}
    assert segments_info and all(set(s) == {"id", "isthing", "category_id"} for s in segments_info)


def test_inputs_of_any_kind_and_size(onnx_file, tmp_path):
    predictor = OnnxPredictor(onnx_file, score_threshold=0.0, top_k=3, batch_size=2)
    path = tmp_path / "small.png"
    Image.fromarray(_image(40, 50, seed=1)).save(path)
    inputs = [str(path), Image.fromarray(_image(150, 90, seed=2)), _image(64, 96, seed=3)]
    batched = predictor(inputs)
    singles = [predictor(item) for item in inputs]
    for result, single, size in zip(batched, singles, [(40, 50), (150, 90), (64, 96)]):
        assert result["sem_seg"].shape == size and result["panoptic_seg"][0].shape == size
        assert len(result["instances"]) == 3 and result["instances"].pred_masks.shape[1:] == size
        np.testing.assert_allclose(
            result["instances"].scores, single["instances"].scores, atol=1e-5
        )
    # 40x50 is upsized by the config's resize, then scaled into the canvas: 64x80, and padded
    # with the pixel mean (about 0 after the graph's normalisation)
    canvas, sizes = predictor.preprocess(str(path))
    assert (sizes["resized_h"], sizes["resized_w"]) == (64, 80)
    assert predictor.metadata["input"]["pad_value"] == [124, 116, 104]
    assert (canvas[:, :, 80:] == np.array([124, 116, 104])[:, None, None]).all()


def test_run_refuses_other_shapes_and_the_wrong_config(onnx_file):
    predictor = OnnxPredictor(onnx_file)
    with pytest.raises(ValueError, match=r"\[B, 3, 64, 96\]"):
        predictor.run(np.zeros((1, 3, 64, 90), dtype=np.uint8))
    with pytest.raises(ValueError, match="maskdino_r50_coco_panoptic_seg_50ep"):
        OnnxPredictor(onnx_file, config="maskdino_r50_coco_instance_seg_50ep")
    OnnxPredictor(onnx_file, config="maskdino_r50_coco_panoptic_seg_50ep")  # the right one


def test_instance_filters_are_checked_as_the_predictor_checks_them(onnx_file):
    """top_k=-1 would slice off the last instance, a threshold of 1.5 would drop every one:
    refused, in the constructor and per call, with the PyTorch Predictor's words."""
    with pytest.raises(ValueError, match="top_k must be an integer >= 1, got -1"):
        OnnxPredictor(onnx_file, top_k=-1)
    with pytest.raises(ValueError, match=r"score_threshold must be a number in \[0, 1\]"):
        OnnxPredictor(onnx_file, score_threshold=1.5)
    predictor = OnnxPredictor(onnx_file)
    with pytest.raises(ValueError, match="top_k must be an integer >= 1, got 0"):
        predictor(_image(64, 96), top_k=0)
    with pytest.raises(ValueError, match=r"score_threshold must be a number in \[0, 1\]"):
        predictor(_image(64, 96), score_threshold=float("nan"))


def test_raw_export_gives_raw_arrays(swinl_instance_export):
    _, path = swinl_instance_export["gather"]
    result = OnnxPredictor(path)(_image(64, 96))
    assert set(result) == {"pred_logits", "pred_boxes", "pred_masks"}
    assert result["pred_logits"].shape == (16, 80) and result["pred_masks"].shape == (16, 16, 24)


RUNTIME_SCRIPT = """
import json, sys
from detrex_ext.export import OnnxPredictor
result = OnnxPredictor(sys.argv[1], score_threshold=0.0)(sys.argv[2])
ids, segments = result["panoptic_seg"]
print(json.dumps({
    "torch": [m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision")],
    "instances": len(result["instances"]),
    "masks": list(result["instances"].pred_masks.shape),
    "panoptic": list(ids.shape),
}))
"""


def test_runtime_in_a_fresh_process_never_imports_torch(onnx_file, tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(_image(90, 120, seed=4)).save(path)
    out = subprocess.run(
        [sys.executable, "-c", RUNTIME_SCRIPT, str(onnx_file), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["torch"] == []
    assert summary["masks"] == [summary["instances"], 90, 120] and summary["panoptic"] == [90, 120]


DEMO_SCRIPT = """
import runpy, sys
sys.argv = ["demo.py", *sys.argv[1:]]
try:
    runpy.run_path("tools/demo.py", run_name="__main__")
except SystemExit as exit:
    code = exit.code
print("TORCH", [m for m in sys.modules if m.split(".")[0] == "torch"], "EXIT", code)
"""


def _demo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", DEMO_SCRIPT, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_demo_draws_with_onnx_without_torch(onnx_file, tmp_path):
    image = tmp_path / "scene.png"
    Image.fromarray(_image(96, 144, seed=5)).save(image)
    out = _demo("--onnx", str(onnx_file), "--input", str(image), "--output", str(tmp_path / "o"))
    assert "TORCH [] EXIT 0" in out.stdout, out.stdout + out.stderr
    drawing = np.asarray(Image.open(tmp_path / "o" / "scene.png").convert("RGB"))
    assert drawing.shape == (96, 144, 3)
    assert (drawing != np.asarray(Image.open(image).convert("RGB"))).any()  # segments drawn


def test_demo_onnx_refuses_what_cannot_apply(onnx_file, tmp_path):
    image = tmp_path / "scene.png"
    Image.fromarray(_image(32, 32)).save(image)
    out = _demo("--onnx", str(onnx_file), "--weights", "x.pth", "--input", str(image))
    assert "EXIT 1" in out.stdout and "--weights" in out.stderr
    out = _demo("--onnx", str(onnx_file), "--amp", "bf16", "--input", str(image))
    assert "EXIT 1" in out.stdout and "--amp cannot apply" in out.stderr
    out = _demo("--onnx", str(onnx_file), "--input", str(image), "model.num_queries=5")
    assert "EXIT 1" in out.stdout and "config overrides cannot apply" in out.stderr
    out = _demo(
        "--onnx",
        str(onnx_file),
        "--config-file",
        "maskdino_swinl_coco_instance_seg_50ep",
        "--input",
        str(image),
    )
    assert "EXIT 1" in out.stdout and "exported from config" in out.stderr
