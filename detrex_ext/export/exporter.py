"""Export a model to ONNX or to a ``torch.export`` program (``.pt2``), model-agnostically.

A model takes part by defining ``export_adapter(*, postprocess, mask_format)``, which returns an
``nn.Module`` mapping uint8 images ``[B, 3, H, W]`` to a tuple of tensors, with attributes
``input_names`` and ``output_names``, and methods ``check_input_size(h, w)`` and
``export_metadata()`` (see ``detrex_projects.maskdino.modeling.export`` for Mask DINO). Nothing
here knows about a particular model: the graph is traced with ``torch.export`` (batch dynamic,
height and width fixed), the deformable-attention op is lowered to plain ops
(``detrex_ext.export.msda``), and the result is written as ONNX (checked by ``onnx.checker`` with
full shape inference) or as a ``.pt2`` archive, each with the metadata a runtime needs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .deps import require
from .metadata import FORMAT_VERSION, METADATA_FILE, METADATA_KEY, parse_metadata
from .msda import MSDA_LOWERINGS, lowered_deformable_attention, msda_decomposition_table
from .onnx_opset import to_opset_17

__all__ = [
    "DEFAULT_OPSET",
    "FORMATS",
    "ONNX_OPSETS",
    "export_onnx",
    "export_program",
    "load_program",
    "sample_images",
    "save_program",
    "sha256_file",
]

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "torch_export")
DEFAULT_OPSET = 18
ONNX_OPSETS = (17, 18, 19, 20)
ONNX_OPTIMIZATIONS = ("fast", "full", "none")
# Above this many bytes of weights the ONNX file keeps them in an external data file (the
# protobuf limit is 2 GiB).
_EXTERNAL_DATA_BYTES = 1_800_000_000


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def sample_images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Deterministic uint8 ``[batch, 3, height, width]`` images with structure (smooth colour
    fields, filled rectangles and ellipses, a little noise): inputs for tracing and checks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    images = []
    for _ in range(batch):
        phase = rng.uniform(0, 2 * np.pi, size=3)
        image = np.stack(
            [127 + 100 * np.sin(xx / width * 3 + yy / height * 2 + p) for p in phase], -1
        )
        for _ in range(int(rng.integers(3, 7))):
            y0, x0 = rng.integers(0, height * 3 // 4), rng.integers(0, width * 3 // 4)
            h = int(rng.integers(height // 8, height // 2))
            w = int(rng.integers(width // 8, width // 2))
            colour = rng.integers(0, 256, size=3)
            if rng.random() < 0.5:
                image[y0 : y0 + h, x0 : x0 + w] = colour
            else:
                inside = ((yy - y0 - h / 2) / (h / 2)) ** 2 + ((xx - x0 - w / 2) / (w / 2)) ** 2
                image[inside <= 1] = colour
        image = image + rng.normal(0, 4, size=image.shape)
        images.append(np.clip(image, 0, 255).round().astype(np.uint8).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(images))


def _check_adapter(adapter: torch.nn.Module, input_size: Sequence[int]) -> tuple[int, int]:
    height, width = (int(v) for v in input_size)
    adapter.check_input_size(height, width)
    return height, width


def export_program(
    adapter: torch.nn.Module, input_size: Sequence[int], *, msda: str | None = "grid_sample"
) -> torch.export.ExportedProgram:
    """Trace ``adapter`` with ``torch.export`` for uint8 images of ``input_size`` (H, W).

    The batch axis is dynamic (traced with 2 images; any batch >= 1 runs). ``msda`` lowers the
    deformable-attention op to plain ops (``grid_sample`` or ``gather``, see
    ``detrex_ext.export.msda``); None keeps the custom op (its Triton kernel then runs on CUDA, and
    loading the program needs ``detrex_ext`` imported).
    """
    if msda is not None and msda not in MSDA_LOWERINGS:
        raise ValueError(f"msda must be one of {MSDA_LOWERINGS} or None, got {msda!r}")
    height, width = _check_adapter(adapter, input_size)
    sample = sample_images(2, height, width)
    batch = torch.export.Dim("batch", min=1)
    lowering = contextlib.nullcontext() if msda is None else lowered_deformable_attention(msda)
    with torch.no_grad(), lowering:
        program = torch.export.export(
            adapter.eval(), (sample,), dynamic_shapes={"images": {0: batch}}, strict=False
        )
    if msda is not None and _calls_op(program):  # op calls the call-site swap did not reach
        program = program.run_decompositions(msda_decomposition_table(msda))
    return program


def _calls_op(program: torch.export.ExportedProgram) -> bool:
    op = torch.ops.detrex_ext.ms_deform_attn.default
    return any(node.target is op for node in program.graph.nodes if node.op == "call_function")


def save_program(
    program: torch.export.ExportedProgram, path: str | os.PathLike, metadata: dict[str, Any]
) -> Path:
    """Write a ``.pt2`` archive with the metadata as the extra file ``detrex_ext.export.json``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.export.save(program, partial, extra_files={METADATA_FILE: json.dumps(metadata)})
    os.replace(partial, path)
    return path


def load_program(path: str | os.PathLike) -> tuple[torch.export.ExportedProgram, dict[str, Any]]:
    """Load a ``.pt2`` written by :func:`save_program` and its metadata.

    ``torch.export.load`` works as well; this also defines the deformable-attention op first (a
    program exported with ``msda=None`` contains it) and reads the metadata.
    """
    import detrex_ext.layers.multi_scale_deform_attn_op  # noqa: F401  (defines the op)

    extra = {METADATA_FILE: ""}
    program = torch.export.load(str(path), extra_files=extra)
    return program, parse_metadata(extra[METADATA_FILE], str(path))


# ---------------------------------------------------------------------------------- ONNX
def _register_dangling_constants(graph) -> int:
    """Make constants that the ONNX optimiser left without a producer into initializers (it can
    fold a node into a constant value without registering it; the graph is then invalid)."""
    inputs = {id(v) for v in graph.inputs}
    fixed = 0
    for node in graph:
        for value in node.inputs:
            if value is None or value.producer() is not None or id(value) in inputs:
                continue
            if value.name not in graph.initializers and value.const_value is not None:
                graph.register_initializer(value)
                fixed += 1
    return fixed


def _fast_optimize(model) -> None:
    """Constant folding, dead-code and duplicate removal (the onnxscript optimiser without its
    pattern rewriter, which takes most of the export time; ONNX Runtime fuses at load time)."""
    import onnx_ir.passes.common as passes
    import onnxscript.optimizer as optimizer

    optimizer.fold_constants_ir(model)
    optimizer.remove_unused_nodes(model)
    passes.CommonSubexpressionEliminationPass()(model)
    passes.RemoveUnusedNodesPass()(model)
    passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    passes.DeduplicateInitializersPass()(model)


def _name_batch_axis(graph) -> None:
    """Call the dynamic first axis of every graph input and output ``batch``."""
    from onnx_ir import Shape, SymbolicDim

    for value in [*graph.inputs, *graph.outputs]:
        if value.shape is None or len(value.shape) == 0:
            continue
        dims = list(value.shape)
        if isinstance(dims[0], SymbolicDim):
            value.shape = Shape([SymbolicDim("batch"), *dims[1:]])


def export_onnx(
    adapter: torch.nn.Module,
    input_size: Sequence[int],
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    msda: str = "grid_sample",
    metadata: dict[str, Any] | None = None,
    optimize: str = "fast",
    program: torch.export.ExportedProgram | None = None,
) -> Path:
    """Export ``adapter`` to an ONNX file (batch dynamic, H and W fixed) and check it.

    Args:
        adapter: the model's export adapter (see the module docstring).
        input_size: ``(H, W)`` of the graph input.
        path: the ``.onnx`` file to write (replaced atomically).
        opset: ONNX opset, 17 to 20.
        msda: deformable-attention lowering, ``grid_sample`` or ``gather``.
        metadata: the JSON object stored under ``detrex_ext.export`` in the file.
        optimize: ``fast`` (constant folding and clean-up), ``full`` (also the onnxscript
            pattern rewriter: several times slower to export) or ``none``.
        program: ``export_program(adapter, input_size, msda=msda)`` when already made (it is
            the first half of the work).
    """
    onnx = require("onnx", "ONNX export")
    require("onnxscript", "ONNX export")
    if opset not in ONNX_OPSETS:
        raise ValueError(f"opset must be one of {ONNX_OPSETS}, got {opset}")
    if msda not in MSDA_LOWERINGS:
        raise ValueError(f"msda must be one of {MSDA_LOWERINGS}, got {msda!r}")
    if optimize not in ONNX_OPTIMIZATIONS:
        raise ValueError(f"optimize must be one of {ONNX_OPTIMIZATIONS}, got {optimize!r}")
    height, width = _check_adapter(adapter, input_size)
    if program is None:
        program = export_program(adapter, (height, width), msda=msda)
    # torch's ONNX translations target opset 18; other opsets are converted from it
    with _quiet("onnx_ir", "onnxscript"):
        onnx_program, weight_bytes = _translate(program, adapter, (height, width), opset, optimize)
    model = onnx_program.model
    fixed = _register_dangling_constants(model.graph)
    if fixed:
        logger.debug("registered %d constants the optimiser left unregistered", fixed)
    _name_batch_axis(model.graph)
    if metadata is not None:
        model.metadata_props[METADATA_KEY] = json.dumps(metadata)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if opset < 18:
        to_opset_17(model)
    if weight_bytes > _EXTERNAL_DATA_BYTES:  # the weights go to "<name>.data" beside the file
        onnx_program.save(path, external_data=True)
        onnx.checker.check_model(str(path), full_check=True)
        return path
    return _save_checked(onnx_program, path)


@contextlib.contextmanager
def _quiet(*names: str):
    """Only errors from these loggers (the ONNX passes log every step, and warn about each
    split they do not fold)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def _translate(program, adapter, size, opset: int, optimize: str):
    """The ONNXProgram of ``program`` (opset 18 or above) after the chosen optimisation, and
    the bytes of its weights."""
    onnx_program = torch.onnx.export(
        program,
        (sample_images(2, *size),),
        input_names=list(adapter.input_names),
        output_names=list(adapter.output_names),
        opset_version=max(opset, 18),
        dynamo=True,
        optimize=optimize == "full",
        verbose=False,
    )
    if optimize == "fast":
        _fast_optimize(onnx_program.model)
    initializers = onnx_program.model.graph.initializers.values()
    weight_bytes = sum(v.const_value.nbytes for v in initializers if v.const_value is not None)
    return onnx_program, weight_bytes


def _save_checked(model, path: Path) -> Path:
    """Write an ONNXProgram to ``path`` atomically, after the full checker passed on it."""
    import onnx

    partial = path.with_name(path.name + ".partial")
    model.save(partial, external_data=False)
    try:
        onnx.checker.check_model(str(partial), full_check=True)
    except Exception:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)
    return path


def export_format_metadata(
    *, fmt: str, opset: int | None, msda: str | None, adapter: torch.nn.Module
) -> dict[str, Any]:
    """The format part of the metadata (format, opset, lowering, library versions)."""
    from detrex_ext import __version__

    versions = {"detrex_ext": __version__, "torch": torch.__version__}
    if fmt == "onnx":
        import onnx
        import onnxscript

        versions.update(onnx=onnx.__version__, onnxscript=onnxscript.__version__)
    return {
        "format_version": FORMAT_VERSION,
        "format": fmt,
        "opset": opset,
        "msda": msda,
        "versions": versions,
        "outputs": {"names": list(adapter.output_names)},
    }
