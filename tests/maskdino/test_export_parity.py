"""Exported reduced R50 and Swin-L models (ONNX with both lowerings, torch.export programs) give
the eager model's outputs within the issue's tolerances, on a batch size other than the traced
one; the ONNX files pass the full checker and contain plain ONNX ops only."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from detrex_ext.export import verify_export
from detrex_ext.export.exporter import load_program, sample_images
from detrex_ext.export.metadata import METADATA_KEY
from detrex_ext.export.verify import run_exported

pytestmark = pytest.mark.slow

CASES = [
    ("r50_panoptic_export", "grid_sample"),
    ("r50_panoptic_export", "gather"),
    ("r50_panoptic_export", "torch_export"),
    ("swinl_instance_export", "grid_sample"),
    ("swinl_instance_export", "gather"),  # raw outputs
    ("swinl_instance_export", "torch_export"),
]
OPSETS = {
    ("r50_panoptic_export", "grid_sample"): 18,
    ("r50_panoptic_export", "gather"): 17,
    ("swinl_instance_export", "grid_sample"): 18,
    ("swinl_instance_export", "gather"): 20,
}


def _images(batch: int = 3, seed: int = 5) -> torch.Tensor:
    return sample_images(batch, 64, 96, seed=seed)  # 3 images: the graphs were traced with 2


@pytest.mark.parametrize(("export", "kind"), CASES)
def test_export_matches_eager_within_tolerances(request, export, kind):
    prepared, path = request.getfixturevalue(export)[kind]
    report = verify_export(prepared.adapter, path, _images())
    assert report.ok, report.format()
    # the figures are real measurements on at least one image without near-tie decisions
    assert all(check.counted for check in report.checks.values())
    if kind == "torch_export":
        assert report.checks["all_float"].value <= 1e-5


@pytest.mark.parametrize(("export", "kind"), [c for c in CASES if c[1] != "torch_export"])
def test_onnx_file_is_valid_plain_onnx(request, export, kind):
    _, path = request.getfixturevalue(export)[kind]
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    domains = {node.domain for node in model.graph.node}
    assert domains <= {"", "ai.onnx"}, domains  # no custom op left
    op_types = {node.op_type for node in model.graph.node}
    assert ("GridSample" in op_types) == (kind != "gather")
    assert [o.version for o in model.opset_import if o.domain == ""] == [OPSETS[export, kind]]
    (images,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in images.type.tensor_type.shape.dim]
    assert images.name == "images" and dims == ["batch", 3, 64, 96]
    assert images.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert {p.key for p in model.metadata_props} == {METADATA_KEY}


def test_batch_of_one_equals_the_batch_rows(r50_panoptic_export):
    _, path = r50_panoptic_export["grid_sample"]
    images = _images(3).numpy()
    batch, _ = run_exported(path, images)
    single, _ = run_exported(path, images[1:2])
    for name, array in single.items():
        np.testing.assert_allclose(array[0], batch[name][1], atol=1e-5, err_msg=name)


def test_program_runs_with_plain_torch_and_describes_itself(r50_panoptic_export, tmp_path):
    """A fresh interpreter loads the .pt2 with torch.export.load alone (no config, no model code,
    detrex_ext never imported) and gets the outputs the verified program gives."""
    _, path = r50_panoptic_export["torch_export"]
    images = _images(1)
    torch.save(images, tmp_path / "images.pt")
    script = (
        "import sys, torch\n"
        f"program = torch.export.load({str(path)!r})\n"
        f"images = torch.load({str(tmp_path / 'images.pt')!r})\n"
        "with torch.no_grad():\n"
        "    outputs = program.module()(images)\n"
        f"torch.save([o for o in outputs], {str(tmp_path / 'out.pt')!r})\n"
        "assert not [m for m in sys.modules if m.startswith(('detrex_ext', 'detrex_projects'))]\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=600)
    outputs = torch.load(tmp_path / "out.pt")
    expected, metadata = run_exported(path, images.numpy())
    assert list(expected) == metadata["outputs"]["names"] and len(outputs) == len(expected)
    for tensor, (name, array) in zip(outputs, expected.items()):  # thread counts may differ
        np.testing.assert_allclose(tensor.numpy(), array, atol=1e-5, rtol=0, err_msg=name)
    _, metadata = load_program(path)
    assert metadata["format"] == "torch_export" and metadata["msda"] == "grid_sample"
    assert metadata["config"] == "maskdino_r50_coco_panoptic_seg_50ep"
    assert metadata["outputs"]["names"] == [
        "instance_scores",
        "instance_classes",
        "instance_boxes",
        "instance_masks",
        "instance_valid",
        "sem_seg",
        "panoptic_seg",
        "panoptic_segments",
        "pred_logits",
        "pred_boxes",
    ]
