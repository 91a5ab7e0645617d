"""Exported reduced Mask DINO models, made once per session and shared by the export tests.

Every export is of a reduced shipped config (small backbone and head, same structure) with random
weights, at a 64x96 input: R50 panoptic (instance + semantic + panoptic outputs) and Swin-L
instance (5 levels, mask-enhanced "bitmask" anchors), each as ONNX with both deformable-attention
lowerings (grid_sample at the default opset 18; gather at opset 17 for R50 and, with the raw
outputs, at opset 20 for Swin-L) and as a torch.export program sharing the grid_sample trace.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from maskdino_test_utils import reduced_overrides

EXPORT_SIZE = (64, 96)
# a short top-k: the (random-weight) class scores are far apart at its boundary
EXPORT_OVERRIDES = ["model.test_topk_per_image=10"]


def prepare(name: str, *extra: str, postprocess: bool = True):
    """A reduced shipped config, built with seed 0 and ready to write (``PreparedExport``)."""
    from detrex_ext.export.api import prepare_export

    torch.manual_seed(0)
    return prepare_export(
        f"maskdino/{name}.py",
        input_size=EXPORT_SIZE,
        postprocess=postprocess,
        overrides=[*reduced_overrides(name), *EXPORT_OVERRIDES, *extra],
    )


def _three_files(prepared, folder: Path, gather_opset: int, gather_prepared=None) -> dict:
    """kind -> (prepared export, file): ONNX grid_sample, .pt2 (sharing its traced program) and
    ONNX gather."""
    program = prepared.program("grid_sample")
    gather = gather_prepared or prepared
    return {
        "grid_sample": (
            prepared,
            prepared.write_onnx(folder / "grid_sample.onnx", program=program),
        ),
        "torch_export": (prepared, prepared.write_program(folder / "model.pt2", program=program)),
        "gather": (
            gather,
            gather.write_onnx(folder / "gather.onnx", msda="gather", opset=gather_opset),
        ),
    }


@pytest.fixture(scope="session")
def r50_panoptic_export(tmp_path_factory) -> dict:
    # random weights score ~0.01: keep every query so the panoptic maps have segments
    prepared = prepare("maskdino_r50_coco_panoptic_seg_50ep", "model.object_mask_threshold=0.0")
    return _three_files(prepared, tmp_path_factory.mktemp("r50_panoptic"), gather_opset=17)


@pytest.fixture(scope="session")
def swinl_instance_export(tmp_path_factory) -> dict:
    prepared = prepare("maskdino_swinl_coco_instance_seg_50ep")
    raw = prepare("maskdino_swinl_coco_instance_seg_50ep", postprocess=False)
    folder = tmp_path_factory.mktemp("swinl_instance")
    return _three_files(prepared, folder, gather_opset=20, gather_prepared=raw)
