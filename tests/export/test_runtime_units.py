"""The ONNX runtime's parts that need no exported model: resizing (against PyTorch's and the
Predictor's own), metadata checks, clear errors, and the import rules (nothing of the export
extra is imported unless used; the runtime never imports torch)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper

from detrex_ext.data.transforms import ResizeShortestEdge
from detrex_ext.export.deps import require
from detrex_ext.export.image_ops import (
    fitted_size,
    pad_to_canvas,
    resize_bilinear,
    resize_nearest,
)
from detrex_ext.export.metadata import METADATA_KEY, check_config, parse_metadata

RESIZE = {"type": "ResizeShortestEdge", "short_edge_length": 800, "max_size": 1333}


@pytest.mark.parametrize("size", [(480, 640), (640, 480), (427, 640), (200, 1000), (1333, 800)])
def test_fitted_size_is_the_predictors_resize_when_it_fits(size):
    expected = ResizeShortestEdge.get_output_shape(*size, 800, 1333)
    canvas = (1344, 1344)
    assert fitted_size(*size, RESIZE, canvas) == expected


@pytest.mark.parametrize("size", [(480, 640), (640, 480), (200, 1000)])
def test_fitted_size_scales_down_into_the_canvas(size):
    height, width = fitted_size(*size, RESIZE, (800, 1216))
    assert height <= 800 and width <= 1216 and (height == 800 or width == 1216)
    assert abs(height / width - size[0] / size[1]) < 0.01  # aspect ratio kept
    # without a resize rule an image that fits keeps its size
    assert fitted_size(50, 70, None, (64, 96)) == (50, 70)


def test_pad_to_canvas_fills_with_the_value():
    image = np.full((3, 5, 3), 7, dtype=np.uint8)
    canvas = pad_to_canvas(image, (4, 6), [124, 116, 104])
    assert canvas.shape == (3, 4, 6) and (canvas[:, :3, :5] == 7).all()
    assert (canvas[:, 3, :] == np.array([124, 116, 104])[:, None]).all()
    assert (canvas[:, :, 5] == np.array([124, 116, 104])[:, None]).all()


@pytest.mark.parametrize(("source", "target"), [((8, 12), (29, 17)), ((30, 20), (7, 11))])
def test_bilinear_resize_equals_torch(source, target):
    maps = np.random.default_rng(0).normal(size=(3, *source)).astype(np.float32)
    expected = F.interpolate(
        torch.from_numpy(maps)[None], size=target, mode="bilinear", align_corners=False
    )[0].numpy()
    np.testing.assert_allclose(resize_bilinear(maps, target), expected, atol=1e-5)


@pytest.mark.parametrize(("source", "target"), [((8, 12), (29, 17)), ((30, 20), (7, 11))])
def test_nearest_resize_equals_torch_nearest_exact(source, target):
    labels = np.random.default_rng(1).integers(0, 50, size=source)
    expected = F.interpolate(
        torch.from_numpy(labels)[None, None].double(), size=target, mode="nearest-exact"
    )[0, 0].long()
    assert np.array_equal(resize_nearest(labels, target), expected.numpy())


def test_metadata_errors_name_the_fix():
    with pytest.raises(ValueError, match="tools/export_model.py"):
        parse_metadata(None, "x.onnx")
    with pytest.raises(ValueError, match="version 7"):
        parse_metadata('{"format_version": 7}', "x.onnx")
    meta = {"config": "maskdino_r50_coco_panoptic_seg_50ep"}
    check_config(meta, "projects/maskdino/configs/maskdino_r50_coco_panoptic_seg_50ep.py", "x")
    with pytest.raises(ValueError, match="exported from config 'maskdino_r50_coco_panoptic"):
        check_config(meta, "maskdino_r50_coco_instance_seg_50ep", "x.onnx")


def test_missing_optional_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"pip install '\.\[export\]'"):
        require("onnxruntime", "The ONNX predictor")
    from detrex_ext.export import OnnxPredictor

    with pytest.raises(ImportError, match="'onnxruntime'"):
        OnnxPredictor("model.onnx")


def test_onnx_file_without_export_metadata_is_refused(tmp_path):
    node = helper.make_node("Identity", ["images"], ["out"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.UINT8, [1, 3, 4, 4])],
    )
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    from detrex_ext.export import OnnxPredictor

    with pytest.raises(ValueError, match=f"no '{METADATA_KEY}' metadata"):
        OnnxPredictor(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        OnnxPredictor(tmp_path / "missing.onnx")


def _imported_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=300
    )
    return set(out.stdout.split())


def test_nothing_of_the_export_extra_is_imported_unless_used():
    loaded = _imported_after(
        "import detrex_ext, detrex_ext.export, detrex_ext.engine.predictor\n"
        "import detrex_projects.maskdino\n"
        "from detrex_ext.export import OnnxPredictor, export_model, verify_export"
    )
    assert "torch" in loaded
    assert not loaded & {"onnx", "onnxruntime", "onnxscript", "onnx_ir"}


def test_the_onnx_runtime_imports_no_torch():
    loaded = _imported_after(
        "import numpy as np\n"
        "from detrex_ext.export import OnnxPredictor\n"
        "from detrex_ext.export.onnx_predictor import map_outputs\n"
        "import onnxruntime"
    )
    assert "onnxruntime" in loaded and "torch" not in loaded


def _ir_model(nodes, inputs, outputs, initializers=()):
    import onnx_ir as ir

    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return ir.serde.deserialize_model(proto)


def test_opset_17_rewrites_the_operators_changed_in_18(tmp_path):
    import onnx_ir as ir

    from detrex_ext.export.onnx_opset import to_opset_17

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6, 4])
    model = _ir_model(
        [
            helper.make_node("ReduceMax", ["x", "axes"], ["m"], keepdims=1),
            helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3),
            helper.make_node("Pad", ["x", "pads"], ["p"]),
        ],
        [x],
        [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
            for name, shape in [
                ("m", [2, 6, 1]),
                ("a", [2, 2, 4]),
                ("b", [2, 2, 4]),
                ("c", [2, 2, 4]),
                ("p", [2, 8, 4]),
            ]
        ],
        [
            helper.make_tensor("axes", TensorProto.INT64, [1], [2]),
            helper.make_tensor("pads", TensorProto.INT64, [6], [0, 1, 0, 0, 1, 0]),
        ],
    )
    to_opset_17(model)
    proto = ir.serde.serialize_model(model)
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import if o.domain == ""] == [17]
    import onnxruntime

    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    data = np.random.default_rng(0).normal(size=(2, 6, 4)).astype(np.float32)
    m, a, b, c, p = onnxruntime.InferenceSession(str(path)).run(None, {"x": data})
    np.testing.assert_array_equal(m, data.max(2, keepdims=True))
    for part, expected in zip((a, b, c), np.split(data, 3, axis=1)):
        np.testing.assert_array_equal(part, expected)
    np.testing.assert_array_equal(p, np.pad(data, ((0, 0), (1, 1), (0, 0))))


def test_opset_17_refuses_operators_new_in_18():
    from detrex_ext.export.onnx_opset import to_opset_17

    x = helper.make_tensor_value_info("x", TensorProto.INT32, [4])
    model = _ir_model(
        [helper.make_node("BitwiseNot", ["x"], ["y"])],
        [x],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [4])],
    )
    with pytest.raises(ValueError, match="BitwiseNot.*new or changed in opset 18; use 18"):
        to_opset_17(model)
