"""Writing an opset-18 ONNX graph (what PyTorch's exporter emits) as opset 17.

ONNX's own version converter lacks 18 -> 17 adapters for ``Pad`` and ``Split`` and leaves
opset-18 attributes on reduce operators, so the few operators that changed in opset 18 are
rewritten here to their opset-13 forms (which opset 17 uses), and anything else new in opset 18
is refused with a clear error. Which operators changed is read from ONNX's own schemas.
"""

from __future__ import annotations

import numpy as np

__all__ = ["to_opset_17"]

_REDUCE_AXES_INPUT = {
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
}
_RESIZE_18_DEFAULTS = {"antialias": 0, "keep_aspect_ratio_policy": "stretch"}


def _refuse(node, why: str) -> ValueError:
    return ValueError(f"cannot write {node.op_type} node {node.name!r} in opset 17: {why}; use 18+")


def _reduce(node) -> None:
    import onnx_ir as ir

    noop = node.attributes.pop("noop_with_empty_axes", None)
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        axes = node.inputs[1].const_value
        if axes is None:
            raise _refuse(node, "its axes are computed in the graph")
        node.attributes["axes"] = ir.AttrInt64s("axes", [int(a) for a in np.asarray(axes)])
        node.resize_inputs(1)
    elif noop is not None and noop.as_int():
        raise _refuse(node, "noop_with_empty_axes=1")


def _split(node, graph) -> None:
    import onnx_ir as ir

    count = node.attributes.pop("num_outputs", None)
    if count is None:
        return
    axis = node.attributes["axis"].as_int() if "axis" in node.attributes else 0
    shape = node.inputs[0].shape
    length = shape[axis] if shape is not None else None
    if not isinstance(length, int):
        raise _refuse(node, "the split axis has no static length")
    step = -(-length // count.as_int())
    sizes = [min(step, length - i * step) for i in range(count.as_int())]
    value = ir.Value(name=f"{node.name}_sizes", const_value=ir.tensor(np.array(sizes)))
    graph.register_initializer(value)
    node.resize_inputs(2)
    node.replace_input_with(1, value)


def _resize(node) -> None:
    for name, default in _RESIZE_18_DEFAULTS.items():
        attribute = node.attributes.pop(name, None)
        if attribute is not None and attribute.value != default:
            raise _refuse(node, f"{name}={attribute.value}")
    if "axes" in node.attributes:
        raise _refuse(node, "axes")


def to_opset_17(model) -> None:
    """Rewrite an opset-18 ``onnx_ir`` model in place as opset 17 (main graph, no functions)."""
    from onnx import defs

    graph = model.graph
    for node in list(graph):
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type in _REDUCE_AXES_INPUT:
            _reduce(node)
        elif node.op_type == "Split":
            _split(node, graph)
        elif node.op_type == "Pad":
            if len(node.inputs) > 3 and node.inputs[3] is not None:
                raise _refuse(node, "its axes input")
        elif node.op_type == "Resize":
            _resize(node)
        elif node.op_type in ("ScatterElements", "ScatterND"):
            reduction = node.attributes.get("reduction")
            if reduction is not None and reduction.value in ("min", "max"):
                raise _refuse(node, f"reduction={reduction.value}")
        elif defs.get_schema(node.op_type, 18).since_version == 18:
            raise _refuse(node, "the operator is new or changed in opset 18")
    model.opset_imports[""] = 17
