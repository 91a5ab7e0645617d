"""tools/export_model.py refuses what it cannot export with a message that names the problem and
the fix, before any tracing: sizes off the backbone stride, models without an export adapter,
test-time augmentations the runtime cannot reproduce, an ONNX file without a lowering."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from detrex_ext.config import LazyCall as L
from detrex_ext.config import get_config
from detrex_ext.data import transforms as T
from detrex_ext.export.api import default_input_size, resize_rule

REPO = Path(__file__).resolve().parents[2]
DEMO = "projects/maskdino/configs/maskdino_demo_synthetic.py"


def _export_tool(capsys, *args: str) -> tuple[int, str, str]:
    """``tools/export_model.py`` run in this process: (exit status, stdout, stderr)."""
    spec = importlib.util.spec_from_file_location("export_model", REPO / "tools/export_model.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    status = tool.main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_size_off_the_stride_is_refused_with_the_next_valid_size(tmp_path, capsys):
    status, _, err = _export_tool(
        capsys,
        "--config-file",
        str(REPO / DEMO),
        "--input-size",
        "100",
        "90",
        "--output",
        str(tmp_path / "m.onnx"),
    )
    assert status == 2
    assert "input size 100x90 is not a multiple of the backbone stride 32" in err
    assert "use 128x96" in err
    assert not (tmp_path / "m.onnx").exists()


def test_model_without_export_adapter_is_refused(tmp_path, capsys):
    config = tmp_path / "linear.py"
    config.write_text(
        "from detrex_ext.config import LazyCall as L\n"
        "import torch\n"
        "model = L(torch.nn.Linear)(in_features=2, out_features=2)\n"
    )
    status, _, err = _export_tool(
        capsys, "--config-file", str(config), "--output", str(tmp_path / "m.onnx")
    )
    assert status == 2
    assert "builds a Linear, which the exporter cannot handle" in err and "export_adapter()" in err


def test_onnx_needs_a_lowering(capsys):
    status, out, _ = _export_tool(capsys, "--config-file", DEMO, "--msda", "op")
    assert status == 2 and "use grid_sample or gather" in out


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
