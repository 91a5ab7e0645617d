"""Export a config (a released model name, a config file or a packaged path) with given weights.

    from detrex_ext.export import export_model

    result = export_model("maskdino_r50_coco_instance_seg_50ep", output="r50.onnx")
    result = export_model("my_config.py", "model_final.pth", "m.pt2", fmt="torch_export")

The model is built from the config, its weights loaded (a released model name, an http(s) URL or a
path; ``None`` keeps the random initialisation, or the released weights for a released name),
and exported through its ``export_adapter``; the file carries the metadata of
``detrex_ext.export.metadata`` (input size, resize rule, normalisation, classes, thresholds,
outputs, config name and weights sha256).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .exporter import (
    DEFAULT_OPSET,
    FORMATS,
    export_format_metadata,
    export_onnx,
    export_program,
    save_program,
    sha256_file,
)

__all__ = [
    "ExportResult",
    "PreparedExport",
    "build_for_export",
    "default_input_size",
    "export_model",
    "prepare_export",
]

logger = logging.getLogger(__name__)

_INTERP_NAMES = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL resampling constants


@dataclass
class ExportResult:
    """What :func:`export_model` wrote: the file, its metadata and the exported adapter."""

    path: Path
    metadata: dict[str, Any]
    model: torch.nn.Module
    adapter: torch.nn.Module
    config: Any


def config_name(config: Any) -> str:
    """A config's name: the file stem of a path, else the name as given."""
    if isinstance(config, (str, os.PathLike)):
        name = Path(str(config)).name
        return name[:-3] if name.endswith(".py") else name
    return "<config object>"


def resize_rule(cfg: Any) -> dict[str, Any] | None:
    """The config's test-time resize as the ONNX runtime applies it, or None (no resize).

    Raises for augmentations a runtime without the config cannot reproduce (anything but one
    ``ResizeShortestEdge`` with a single short-edge length).
    """
    from detrex_ext.data.transforms import ResizeShortestEdge
    from detrex_ext.engine.predictor import inference_augmentations

    augmentations = inference_augmentations(cfg)
    if not augmentations:
        return None
    lengths = (
        set(augmentations[0].short_edge_length)
        if isinstance(augmentations[0], ResizeShortestEdge)
        else set()
    )
    if len(augmentations) != 1 or len(lengths) != 1:
        raise ValueError(
            "the exporter handles configs whose test-time augmentation is one ResizeShortestEdge "
            f"with a single short-edge length (or none); this config has {augmentations!r}. "
            "Set dataloader.test.mapper.augmentations to such a resize."
        )
    resize = augmentations[0]
    return {
        "type": "ResizeShortestEdge",
        "short_edge_length": int(lengths.pop()),
        "max_size": int(min(resize.max_size, 1 << 30)),
        "interp": _INTERP_NAMES.get(int(resize.interp), "bilinear"),
    }


def default_input_size(resize: dict[str, Any] | None, stride: int) -> tuple[int, int]:
    """The graph input size when none is given: the test resize's short edge by 1.5 times it,
    both rounded up to the stride (COCO's 800 gives 800x1216)."""
    if resize is None:
        raise ValueError(
            "the config has no test-time resize to take the input size from: pass --input-size "
            "H W (multiples of the backbone stride)"
        )
    stride = max(stride, 1)
    short = resize["short_edge_length"]
    return -(-short // stride) * stride, -(-math.ceil(short * 1.5) // stride) * stride


def class_metadata(cfg: Any, model: torch.nn.Module) -> dict[str, Any]:
    """Class names and colours of the config's dataset (empty lists when unknown)."""
    from detrex_ext.engine.predictor import config_metadata

    metadata = config_metadata(cfg, model)
    found: dict[str, Any] = {}
    for key in ("thing_classes", "stuff_classes", "thing_colors", "stuff_colors"):
        try:
            value = getattr(metadata, key, None) if metadata is not None else None
        except (AttributeError, KeyError):
            value = None
        found[key] = [list(v) if isinstance(v, (list, tuple)) else v for v in (value or [])]
    return found


def build_for_export(
    config: Any,
    weights: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    *,
    postprocess: bool = True,
    mask_format: str = "logits",
) -> tuple[Any, torch.nn.Module, torch.nn.Module, str | None]:
    """``(cfg, model, adapter, weights)``: the config's model on the CPU in eval mode with its
    weights loaded (without weights: the random initialisation of seed 0), and its export
    adapter. Raises for models without ``export_adapter``."""
    from detrex_ext.engine.predictor import build_model, load_config, released_model_name

    cfg = load_config(config, overrides)
    weights = weights or released_model_name(config)
    if weights is None:
        torch.manual_seed(0)  # the same random initialisation in every export (and its check)
    model = build_model(cfg, weights, "cpu")
    make_adapter = getattr(model, "export_adapter", None)
    if make_adapter is None:
        raise ValueError(
            f"config {config_name(config)!r} builds a {type(model).__name__}, which the exporter "
            "cannot handle: it has no export_adapter() method (the graph of uint8 images to "
            "output tensors; Mask DINO defines one, see detrex_projects.maskdino.modeling.export)"
        )
    adapter = make_adapter(postprocess=postprocess, mask_format=mask_format)
    return cfg, model, adapter, None if weights is None else str(weights)


@dataclass
class PreparedExport:
    """A config's model, loaded and described, ready to be written in any format (the tests and
    the benchmark write several files from one)."""

    name: str
    config: Any
    model: torch.nn.Module
    adapter: torch.nn.Module
    weights: str | None
    weights_sha256: str | None
    resize: dict[str, Any] | None
    input_size: tuple[int, int]
    overrides: list[str]

    def metadata(self, fmt: str, opset: int | None, msda: str | None) -> dict[str, Any]:
        """The file's metadata (see ``detrex_ext.export.metadata``)."""
        described = self.adapter.export_metadata()
        mean = described.get("pixel_mean", [0.0, 0.0, 0.0])
        metadata = {
            **export_format_metadata(fmt=fmt, opset=opset, msda=msda, adapter=self.adapter),
            "config": self.name,
            "overrides": list(self.overrides),
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "input": {
                "name": self.adapter.input_names[0],
                "height": self.input_size[0],
                "width": self.input_size[1],
                "dtype": "uint8",
                "layout": "NCHW",
                "channels": "RGB",
                "pixel_mean": mean,
                "pixel_std": described.get("pixel_std", [1.0, 1.0, 1.0]),
                "pad_value": [int(round(v)) for v in mean],
                "resize": self.resize,
            },
            "classes": {
                **class_metadata(self.config, self.model),
                "thing_ids": described.get("thing_ids"),
            },
            "model": described,
        }
        metadata["outputs"].update(
            postprocess=described.get("postprocess", True),
            mask_format=described.get("mask_format", "logits"),
            tasks=described.get("tasks", {}),
            thresholds=described.get("thresholds", {}),
        )
        return metadata

    def program(self, msda: str | None = "grid_sample") -> torch.export.ExportedProgram:
        return export_program(self.adapter, self.input_size, msda=msda)

    def write_onnx(
        self,
        path: str | os.PathLike,
        *,
        opset: int = DEFAULT_OPSET,
        msda: str = "grid_sample",
        optimize: str = "fast",
        program: torch.export.ExportedProgram | None = None,
    ) -> Path:
        """Write an ONNX file (``program``: this export's ``program(msda)`` when made)."""
        logger.info("exporting %s to %s at %s, msda=%s", self.name, path, self.input_size, msda)
        return export_onnx(
            self.adapter,
            self.input_size,
            path,
            opset=opset,
            msda=msda,
            metadata=self.metadata("onnx", opset, msda),
            optimize=optimize,
            program=program,
        )

    def write_program(
        self,
        path: str | os.PathLike,
        *,
        msda: str | None = "grid_sample",
        program: torch.export.ExportedProgram | None = None,
    ) -> Path:
        """Write a ``.pt2`` archive (``program``: this export's ``program(msda)`` when made)."""
        logger.info("exporting %s to %s at %s, msda=%s", self.name, path, self.input_size, msda)
        program = program if program is not None else self.program(msda)
        return save_program(program, path, self.metadata("torch_export", None, msda))


def prepare_export(
    config: Any,
    weights: str | os.PathLike | None = None,
    *,
    input_size: Sequence[int] | None = None,
    postprocess: bool = True,
    mask_format: str = "logits",
    overrides: Sequence[str] = (),
) -> PreparedExport:
    """Build and load a config's model for export; checks the input size up front."""
    cfg, model, adapter, weights = build_for_export(
        config, weights, overrides, postprocess=postprocess, mask_format=mask_format
    )
    resize = resize_rule(cfg)
    stride = int(adapter.export_metadata().get("size_divisibility", 32))
    height, width = (int(v) for v in input_size or default_input_size(resize, stride))
    adapter.check_input_size(height, width)
    weights_sha256 = None
    if weights is not None:
        from detrex_ext.model_zoo import resolve_weights

        weights_sha256 = sha256_file(resolve_weights(weights))
    return PreparedExport(
        name=config_name(config),
        config=cfg,
        model=model,
        adapter=adapter,
        weights=weights,
        weights_sha256=weights_sha256,
        resize=resize,
        input_size=(height, width),
        overrides=list(overrides),
    )


def export_model(
    config: Any,
    weights: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    *,
    fmt: str = "onnx",
    opset: int = DEFAULT_OPSET,
    msda: str | None = "grid_sample",
    input_size: Sequence[int] | None = None,
    postprocess: bool = True,
    mask_format: str = "logits",
    optimize: str = "fast",
    overrides: Sequence[str] = (),
) -> ExportResult:
    """Build, load and export a config; returns the written file and its metadata.

    Args:
        config: released model name, config file or packaged path (``maskdino/<name>.py``).
        weights: path, http(s) URL or released model name (default: the released weights of a
            released name, else the random initialisation, with a warning).
        output: file to write (default ``<config>.onnx`` / ``<config>.pt2``).
        fmt: ``onnx`` or ``torch_export``.
        opset: ONNX opset (17 to 20).
        msda: deformable-attention lowering, ``grid_sample`` or ``gather`` (``None``, for
            ``torch_export`` only, keeps the custom op).
        input_size: ``(H, W)`` of the graph input, multiples of the backbone stride; default:
            the test resize's short edge by 1.5 times it (800x1216 for the COCO configs).
        postprocess: final predictions in the graph (default), else the raw outputs.
        mask_format: instance masks as ``logits`` (float), ``prob`` (float) or ``binary``.
        optimize: ONNX graph optimisation, ``fast``, ``full`` or ``none``.
        overrides: ``key=value`` config overrides.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if msda is None and fmt == "onnx":
        raise ValueError(
            "ONNX needs a deformable-attention lowering: msda='grid_sample' or 'gather'"
        )
    prepared = prepare_export(
        config,
        weights,
        input_size=input_size,
        postprocess=postprocess,
        mask_format=mask_format,
        overrides=overrides,
    )
    suffix = ".onnx" if fmt == "onnx" else ".pt2"
    path = Path(output) if output is not None else Path(prepared.name + suffix)
    if fmt == "onnx":
        prepared.write_onnx(path, opset=opset, msda=msda, optimize=optimize)
        metadata = prepared.metadata("onnx", opset, msda)
    else:
        prepared.write_program(path, msda=msda)
        metadata = prepared.metadata("torch_export", None, msda)
    return ExportResult(
        path=path,
        metadata=metadata,
        model=prepared.model,
        adapter=prepared.adapter,
        config=prepared.config,
    )
