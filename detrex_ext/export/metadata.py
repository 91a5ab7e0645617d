"""The description an exported model carries: what a runtime needs without the config or PyTorch.

It is a JSON object stored in the ONNX file's metadata (``metadata_props`` key
``detrex_ext.export``, readable by ONNX Runtime alone) and in ``.pt2`` archives as the extra file
``detrex_ext.export.json``. Fields (``format_version`` 1):

* ``config`` (name), ``weights`` (as given), ``weights_sha256`` (null: random initialisation);
* ``format`` (``onnx`` / ``torch_export``), ``opset``, ``msda`` (lowering), ``versions``;
* ``input``: ``name``, ``height``, ``width``, ``dtype`` (uint8), ``layout`` (NCHW), ``channels``
  (RGB), ``pixel_mean`` / ``pixel_std`` (0-255 scale, applied inside the graph), ``pad_value``
  (per channel: the mean, rounded) and ``resize`` (the config's test-time resize:
  ``{"type": "ResizeShortestEdge", "short_edge_length", "max_size", "interp"}`` or null);
* ``outputs``: their names; ``postprocess``, ``mask_format``, ``tasks`` (instance / semantic /
  panoptic), ``thresholds``;
* ``classes``: ``thing_classes``, ``stuff_classes``, ``thing_colors``, ``stuff_colors``,
  ``thing_ids`` (contiguous ids of the thing classes, panoptic models).

This module needs only the standard library (the ONNX runtime reads it without PyTorch).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "FORMAT_VERSION",
    "METADATA_FILE",
    "METADATA_KEY",
    "check_config",
    "parse_metadata",
]

METADATA_KEY = "detrex_ext.export"
METADATA_FILE = "detrex_ext.export.json"
FORMAT_VERSION = 1
_REQUIRED = ("config", "input", "outputs", "classes")


def parse_metadata(text: str | None, source: str) -> dict[str, Any]:
    """The metadata object from its JSON text; a clear error when it is missing or unreadable.

    Args:
        text: the stored JSON, or None when the file has no such entry.
        source: the file, for the messages.
    """
    if not text:
        raise ValueError(
            f"{source} carries no {METADATA_KEY!r} metadata: it was not written by "
            "tools/export_model.py (or detrex_ext.export), so its input size, classes and "
            "outputs are unknown. Export the model with tools/export_model.py."
        )
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{source}: the {METADATA_KEY!r} metadata is not valid JSON ({error})"
        ) from None
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{source} has export metadata version {version!r}; this runtime reads version "
            f"{FORMAT_VERSION}. Export the model again with this version of tools/export_model.py."
        )
    missing = [key for key in _REQUIRED if key not in meta]
    if missing:
        raise ValueError(f"{source}: the export metadata lacks {', '.join(missing)}")
    return meta


def _config_stem(config: str) -> str:
    name = str(config).replace("\\", "/").rsplit("/", 1)[-1]
    return name[: -len(".py")] if name.endswith(".py") else name


def check_config(meta: dict[str, Any], config: str | None, source: str) -> None:
    """Raise when ``config`` (a name or path) is not the config the file was exported from."""
    if config is None:
        return
    exported = _config_stem(meta["config"])
    if _config_stem(config) != exported:
        raise ValueError(
            f"{source} was exported from config {exported!r}, not {_config_stem(config)!r}: "
            f"pass --config-file {exported} (or none: the file describes itself), or export "
            f"{_config_stem(config)} with tools/export_model.py"
        )
