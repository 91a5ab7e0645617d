"""Export models to ONNX and ``torch.export``, verify them, and run ONNX files without PyTorch.

Model-agnostic: a model takes part by defining ``export_adapter()`` (Mask DINO's is in
``detrex_projects.maskdino.modeling.export``). The exported graph takes ``images`` (uint8
``[B, 3, H, W]`` RGB, resized and padded; H and W fixed, B dynamic) and returns named tensors:

* raw: ``pred_logits``, ``pred_boxes`` (normalised cxcywh), ``pred_masks`` (stride-4 logits);
* post-processed: ``instance_scores``, ``instance_classes``, ``instance_boxes`` (xyxy input
  pixels), ``instance_masks`` (probabilities or bool at the input size), ``instance_valid``;
  ``sem_seg`` (class ids); ``panoptic_seg`` (segment ids) and ``panoptic_segments`` (one row per
  query: ``is_new_segment, id, category_id, isthing``), as the model switches them on.

Entry points (imported on first use, so ``import detrex_ext.export`` imports neither torch nor
onnx): :func:`export_model` (config -> file), :func:`export_onnx` / :func:`export_program` (an
adapter -> file / program), :func:`load_program`, :func:`verify_export`, and
:class:`OnnxPredictor`, which needs only onnxruntime and numpy. The optional packages are the
``export`` extra: ``pip install '.[export]'``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "InstancePredictions",
    "OnnxPredictor",
    "export_model",
    "export_onnx",
    "export_program",
    "load_program",
    "verify_export",
]

_LAZY = {
    "InstancePredictions": ".onnx_predictor",
    "OnnxPredictor": ".onnx_predictor",
    "export_model": ".api",
    "export_onnx": ".exporter",
    "export_program": ".exporter",
    "load_program": ".exporter",
    "verify_export": ".verify",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
