"""tools/export_model.py refuses what it cannot export with a message that names the problem and
the fix, before any tracing: sizes off the backbone stride, models without an export adapter,
test-time augmentations the runtime cannot reproduce, an ONNX file without a lowering."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from detrex_ext.config import LazyCall as L
from detrex_ext.config import get_config
from detrex_ext.data import transforms as T
from detrex_ext.export.api import default_input_size, resize_rule

REPO = Path(__file__).resolve().parents[2]
DEMO = "projects/maskdino/configs/maskdino_demo_synthetic.py"


def _export_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "tools/export_model.py", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_size_off_the_stride_is_refused_with_the_next_valid_size(tmp_path):
    out = _export_tool(
        "--config-file", DEMO, "--input-size", "100", "90", "--output", str(tmp_path / "m.onnx")
    )
    assert out.returncode == 2
    assert "input size 100x90 is not a multiple of the backbone stride 32" in out.stderr
    assert "use 128x96" in out.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_model_without_export_adapter_is_refused(tmp_path):
    config = tmp_path / "linear.py"
    config.write_text(
        "from detrex_ext.config import LazyCall as L\n"
        "import torch\n"
        "model = L(torch.nn.Linear)(in_features=2, out_features=2)\n"
    )
    out = _export_tool("--config-file", str(config), "--output", str(tmp_path / "m.onnx"))
    assert out.returncode == 2
    assert "builds a Linear, which the exporter cannot handle" in out.stderr
    assert "export_adapter()" in out.stderr


def test_onnx_needs_a_lowering():
    out = _export_tool("--config-file", DEMO, "--msda", "op")
    assert out.returncode == 2 and "use grid_sample or gather" in out.stdout


def test_resize_rule_and_default_size():
    cfg = get_config("maskdino/maskdino_r50_coco_instance_seg_50ep.py")
    rule = resize_rule(cfg)
    assert rule == {
        "type": "ResizeShortestEdge",
        "short_edge_length": 800,
        "max_size": 1333,
        "interp": "bilinear",
    }
    assert default_input_size(rule, 32) == (800, 1216)  # the default
    cfg.dataloader.test.mapper.augmentations.append(L(T.RandomFlip)())
    with pytest.raises(ValueError, match="one ResizeShortestEdge with a single short-edge length"):
        resize_rule(cfg)
