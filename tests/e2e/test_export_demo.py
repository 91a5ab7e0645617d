"""The demo model, trained briefly, exported to ONNX with tools/export_model.py: the file passes
--verify, scores the same box AP, mask AP and PQ as the eager model on the synthetic validation
set (within 0.1), and tools/demo.py --onnx draws the pictures the PyTorch path draws.

Both are evaluated at 128 pixels, the validation images' own size, so that the exported canvas
is exactly what the eager model sees (the demo evaluates at 96 px; see the README's Export
section for what padding into a larger canvas changes).
"""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from e2e_helpers import CONFIGS, REPO_ROOT, run_train_net, subprocess_env
from PIL import Image

pytestmark = pytest.mark.slow

CONFIG = CONFIGS / "maskdino_demo_synthetic.py"
ITERATIONS = 120
TEST_AT_128 = "dataloader.test.mapper.augmentations.0.short_edge_length=128"
METRICS = ("bbox/AP", "segm/AP", "panoptic_seg/PQ")


def _run(*command: str, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, *command],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"{command} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(weights, onnx file, export_model.py output) of a 120-iteration demo training."""
    folder = tmp_path_factory.mktemp("export_demo")
    run_train_net(
        CONFIG.name,
        f"train.output_dir={folder}",
        f"train.max_iter={ITERATIONS}",
        f"train.checkpointer.period={ITERATIONS}",
        "train.visualize.enabled=False",
        "dataloader.evaluator=null",  # evaluated below, by the export tool
        timeout=900,
    )
    weights = folder / "model_final.pth"
    onnx_file = folder / "demo.onnx"
    verify_images = _validation_images(folder, 2)
    proc = _run(
        "tools/export_model.py",
        "--config-file",
        str(CONFIG),
        "--weights",
        str(weights),
        "--input-size",
        "128",
        "128",
        "--opset",
        "20",
        "--output",
        str(onnx_file),
        "--verify",
        "--verify-images",
        *map(str, verify_images),
        "--eval",
        TEST_AT_128,
        timeout=1200,
    )
    return weights, onnx_file, proc.stdout


def _validation_images(folder, count: int) -> list:
    """The first validation images of the synthetic set, written as PNG files."""
    from detrex_ext.data import DatasetCatalog

    paths = []
    for record in DatasetCatalog.get("synthetic_shapes_val")[:count]:
        path = folder / f"val_{record['image_id']}.png"
        Image.fromarray(record["scene"].image()).save(path)
        paths.append(path)
    return paths


def _metric(output: str, name: str) -> tuple[float, float]:
    match = re.search(rf"^\s+{re.escape(name)}\s+([-\d.]+)\s+([-\d.]+)\s+[-+\d.]+$", output, re.M)
    assert match, f"{name} missing from:\n{output}"
    return float(match.group(1)), float(match.group(2))


def test_exported_demo_passes_verify(exported):
    _, onnx_file, output = exported
    assert onnx_file.is_file()
    assert "PASSED" in output and "raw: max |d pred_logits|" in output


@pytest.mark.parametrize("metric", METRICS)
def test_exported_demo_scores_as_the_eager_model(exported, metric):
    _, _, output = exported
    eager, onnx = _metric(output, metric)
    assert eager > 1.0, f"{metric} {eager}: the shortened training learned nothing to compare"
    assert abs(onnx - eager) <= 0.1, f"{metric}: eager {eager}, ONNX {onnx}"


def test_demo_pictures_match_the_pytorch_path(exported, tmp_path):
    weights, onnx_file, _ = exported
    images = _validation_images(tmp_path, 3)
    common = ["--input", *map(str, images), "--score-thresh", "0.5"]
    _run("tools/demo.py", "--onnx", str(onnx_file), *common, "--output", str(tmp_path / "onnx"))
    _run(
        "tools/demo.py",
        "--config-file",
        str(CONFIG),
        "--weights",
        str(weights),
        "--device",
        "cpu",
        *common,
        "--output",
        str(tmp_path / "torch"),
        TEST_AT_128,
    )
    for path in images:
        onnx = np.asarray(Image.open(tmp_path / "onnx" / path.name).convert("RGB"))
        torch_drawing = np.asarray(Image.open(tmp_path / "torch" / path.name).convert("RGB"))
        assert onnx.shape == torch_drawing.shape == (128, 128, 3)
        same = (onnx == torch_drawing).all(-1).mean()
        assert same >= 0.99, f"{path.name}: only {same:.2%} of the pixels agree"
